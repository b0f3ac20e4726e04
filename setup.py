"""lmjax: JAX/Flax sequence models (Transformer and LSTM) for translation, LM, classification, tagging."""

import setuptools

setuptools.setup(
    name='lmjax',
    version='0.1.0',
    description='JAX/Flax research codebase for Transformer and LSTM sequence models.',
    # configs/ stays in the repository (config files name other config files by path):
    # installed, a top-level `configs` package would collide with other projects'.
    packages=setuptools.find_packages(include=['lmjax', 'lmjax.*']),
    package_data={'lmjax.models': ['CONTRACT.md']},
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.4.35,<0.11',
        'flax>=0.10,<0.13',
        'optax>=0.2.3,<0.3',
        'orbax-checkpoint>=0.10,<0.13',
        'ml_collections>=0.1.1',
        'absl-py>=2.0',
        'numpy>=1.26',
        'tensorboardX>=2.6',
        'tqdm>=4.66',
        'matplotlib>=3.8',
        'sacrebleu>=2.4,<3',
        'rouge-score>=0.1.2',
        'seqeval>=1.2.2',
        'sentencepiece>=0.2',
        # Streaming training data: Grain pipelines over ArrayRecord shards.
        'grain>=0.2.12',
        'array-record>=0.7',
        # int8 quantization (lmjax/train/quantization.py): Google's JAX quantization library.
        'qwix>=0.1.8,<0.2',
        # Hugging Face checkpoints in and out (lmjax/hf): tensors without torch.
        'safetensors>=0.4.3',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist>=3.5', 'hypothesis>=6.100', 'tensorflow-datasets>=4.9.7',
                 'gensim>=4.3',
                 # T5Tokenizer's sentinel layout is the reference of the span-corruption tests
                 # (no torch needed for tokenizers).
                 'transformers>=4.50,<5'],
        'tfds': ['tensorflow-datasets>=4.9', 'tensorflow-cpu>=2.16'],
        'bench': ['torch>=2.3'],
        # The Hugging Face parity tests and round trips (tests/hf_*_test.py) build models with
        # transformers. torch is pinned to the CPU build CI machines carry; transformers to 4.x,
        # whose T5 v1.1 keeps its untied lm_head (5.x always ties it to the embeddings).
        # `tokenizers` reads an imported GPT-2's tokenizer.json (the 'hf_bpe' tokenizer).
        'hf': ['torch==2.13.0', 'transformers>=4.50,<5', 'tokenizers>=0.19'],
        # NVIDIA GPUs (docs/DEVICES.md): JAX's CUDA build, in the same version range.
        'cuda12': ['jax[cuda12]>=0.4.35,<0.11'],
        'cuda13': ['jax[cuda13]>=0.4.35,<0.11'],
        'vectors': ['gensim>=4.3'],
        # gs:// workdirs and data: gcsfs serves epath's gs:// (lmjax.fileio); Orbax asks
        # google-cloud-storage about the bucket's layout.
        'gcs': ['gcsfs>=2024.2', 'google-cloud-storage>=2.14'],
    },
)
