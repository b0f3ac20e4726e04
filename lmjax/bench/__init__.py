"""Benchmark suite (issue #7): train/decode/pipeline throughput, FLOPs, MFU, PyTorch references.

    python experiments/benchmark.py [--sections=train,torch,lstm,decode,pipeline] \
        [--shapes=small,base] [--steps=10] [--json=PATH]

Modules, one job each:
  shapes     named shapes → lmjax configs (the normal config path) and random batches
  flops      analytic matmul FLOP formulas, a jaxpr matmul counter, XLA cost analysis
  timing     compile timing, median step timing, matmul ceiling, peak RSS
  jax_train  lmjax train-step throughput (the trainer's jit, donated state, 1-device mesh)
  torch_ref  the PyTorch references (nn.Transformer, nn.LSTM)
  lstm       the PTB-style LSTM LM section (lmjax and PyTorch)
  decode     beam / greedy decode throughput
  pipeline   input-pipeline batches/s (also used by experiments/benchmark_pipeline.py)
  suite      runs the sections and returns a Report
  table      Row / Report, the printed table and the JSON
"""
