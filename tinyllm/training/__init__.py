"""Training with Lightning: the data module, the LightningModule, callbacks, precision and the CLI."""
