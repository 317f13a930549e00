"""ComfyUI knowledge: its checkout, the Manager, custom nodes, the registry, snapshots."""
