"""Decoding algorithms (greedy, beam, sampling) and their binding to the models."""
