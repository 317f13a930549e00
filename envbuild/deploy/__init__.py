"""The resolved deployment a command works on: settings, profile and tools, decided once."""
