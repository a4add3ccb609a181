"""Reading the inventory: YAML with locations, schemas, the loader that builds the model, the
plain-text credential lint, and the files `reconcile init` writes."""
