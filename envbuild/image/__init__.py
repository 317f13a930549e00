"""OCI images: the build context, its files and the build itself."""
