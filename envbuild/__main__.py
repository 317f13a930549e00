"""`python -m envbuild`: the same entry point as the console script."""

from envbuild.cli import main

if __name__ == "__main__":
    main()
