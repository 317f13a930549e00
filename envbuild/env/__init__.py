"""Use cases on environments: sync, generations, run, check, doctor, export, update, init, node ops."""
