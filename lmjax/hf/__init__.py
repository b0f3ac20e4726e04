"""Hugging Face checkpoints in and out: safetensors files, one parameter table per family."""
