"""What runs on a finished training workdir: inference, evaluation and decoding tools,
ensembles, checkpoint averaging, attention plots."""
