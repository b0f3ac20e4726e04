"""The trainer's config sections and their defaults: one schema for every config file.

`configs/default.py` (and through it every config) takes its `optimizer`, `train`,
`eval`, parallelism and runtime fields from here, and the tools fill the fields a run
written by an older lmjax lacks from here too (`lmjax.tools.workdir`). Task and model
sections live in the config files.
"""

import ml_collections


def optimizer() -> ml_collections.ConfigDict:
  """`config.optimizer` (lmjax.optim)."""
  o = ml_collections.ConfigDict()
  # 'adamw', 'adam', 'adafactor' or 'sgd'.
  o.name = 'adamw'
  # Peak learning rate.
  o.learning_rate = 2e-3
  # 'constant', 'rsqrt', 'cosine', 'linear' or 'step'.
  o.schedule = 'cosine'
  # Linear warmup steps.
  o.warmup_steps = 200
  # Final learning rate as a fraction of the peak (cosine/linear).
  o.end_learning_rate_factor = 0.05
  # 'step' schedule: × decay_rate at step decay_begin, then again every decay_every steps.
  o.decay_rate = 0.5
  o.decay_every = 1000
  o.decay_begin = 1000
  # Adam beta1 (momentum for sgd).
  o.b1 = 0.9
  # Adam beta2.
  o.b2 = 0.98
  # Adam epsilon.
  o.eps = 1e-9
  # Decoupled weight decay.
  o.weight_decay = 1e-4
  # adamw: decay only kernels and embeddings (ndim >= 2), not biases or norm scales.
  o.decay_matrices_only = False
  # Global-norm gradient clipping (0 = off).
  o.grad_clip_norm = 1.0
  return o


def train() -> ml_collections.ConfigDict:
  """`config.train` (lmjax.train.loop)."""
  t = ml_collections.ConfigDict()
  # Global batch size (sentences), divisible by the batch mesh axes.
  t.batch_size = 64
  # Total optimizer steps.
  t.num_train_steps = 2_000
  # Micro-batches per step (gradients summed; same update as one big batch, less memory).
  t.grad_accum_steps = 1
  # Label-smoothing epsilon.
  t.label_smoothing = 0.1
  # Exponential moving average of the parameters (0 = off; e.g. 0.999): evaluation, the
  # best checkpoint, evaluate.py and decode.py then use the average (Polyak averaging).
  t.ema_decay = 0.0
  # Steps between train-metric logs.
  t.log_every = 100
  # Steps between evaluations.
  t.eval_every = 500
  # Steps between periodic checkpoints.
  t.checkpoint_every = 500
  # Periodic checkpoints kept (the best is kept separately).
  t.keep_checkpoints = 3
  # Let Orbax write checkpoints in the background.
  t.async_checkpointing = True
  # When the newest checkpoint cannot be restored (damaged files) but an older one can:
  # move it to checkpoints/damaged/ and resume from the older (a preempted VM's job loop
  # needs no one to step in). False: stop with a message naming it.
  t.checkpoint_fallback = True
  # Eval metric that selects the best checkpoint and drives early stopping.
  t.best_metric = 'exact_match'
  # 'max' if larger is better for best_metric, else 'min'.
  t.best_mode = 'max'
  # Stop after this many evals without improvement (0 = never).
  t.early_stopping_patience = 0
  # Carry the LSTM LM state across batches (truncated BPTT over a token stream; lm tasks only).
  t.stateful = False
  # The training objective (lmjax/objectives/registry.py): '' = derived from the model and
  # task (cross_entropy, crf, vae, stateful_lm), a registered name, or 'package.module:name'
  # (imported first, so that an objective defined outside lmjax registers itself).
  t.objective = ''
  # A step whose loss or gradient norm is NaN/Inf is never applied; then 'skip' goes on
  # (stopping after max_nonfinite_steps in a row) or 'stop' stops the run at once.
  t.nonfinite = 'skip'
  # Consecutive non-finite steps after which the run stops with an error (nonfinite='skip').
  t.max_nonfinite_steps = 10
  # Word-level knowledge distillation (lmjax/objectives/kd.py; docs/COMPRESSION.md): loss =
  # (1 - kd_weight)·CE + kd_weight·T²·KL(teacher_T ‖ student_T) over the target tokens
  # (0 = off). Sequence-level KD is experiments/distill.py.
  t.kd_weight = 0.0
  # Softmax temperature T of both distributions in the KD term.
  t.kd_temperature = 1.0
  # Workdir of the trained teacher (its config.json builds the teacher; a fresh student
  # workdir gets a copy of its tokenizers/, so both share one vocabulary).
  t.kd_teacher_workdir = ''
  # Teacher checkpoint: 'latest', 'best' or a step number of its checkpoints/last.
  t.kd_teacher_checkpoint = 'latest'
  # Warm start (lmjax/train/source_run.py): a fresh run begins from the parameters of this
  # trained run's checkpoint (its moving average when it kept one) and copies its tokenizers;
  # the optimizer, step and data position start fresh ('' = off; a resume ignores it).
  t.init_from = ''
  # Its checkpoint: 'latest', 'best' or a step number of its checkpoints/last.
  t.init_checkpoint = 'latest'
  # Which parameters the warm start loads (lmjax/train/init_rules.py, t5x's assignment map):
  # [[model regex, checkpoint path], ...] over '/'-joined paths, first match wins; the path
  # may use the match's groups (\1), and None declares a new parameter (fresh init, e.g. a
  # classifier head). [] = every parameter by its own name. Every model parameter must be
  # covered and every checkpoint parameter loaded or skipped (init_skip), or the run stops
  # with a list; WORKDIR/init_report.json lists what was loaded, new and skipped.
  t.init_rules = []
  # Regexes of checkpoint parameters the warm start leaves out (e.g. a pretraining head).
  t.init_skip = []
  # Regexes of parameters that never change (their updates are zero: optax.multi_transform),
  # e.g. ['encoder/.*'] to train only a new head. [] = train everything.
  t.freeze = []
  # Quantization-aware training with qwix (lmjax/models/quantization.py): '' = off, 'int8'
  # (int8 weights and activations, fake-quantized; straight-through gradients) or
  # 'int8_weights'. Checkpoints stay float; evaluate.py --quantize=int8 runs them in int8.
  t.quantization = ''
  t.pruning = ml_collections.ConfigDict()
  # Gradual magnitude pruning (Zhu & Gupta 2017; lmjax/train/pruning.py): final fraction of
  # zeros of every weight matrix (kernels, embeddings), in [0, 1); 0 = off.
  t.pruning.sparsity = 0.0
  # First step of the cubic schedule (sparsity 0 there).
  t.pruning.begin_step = 0
  # Step that reaches the final sparsity (0 = train.num_train_steps); end - begin must be a
  # multiple of update_every.
  t.pruning.end_step = 0
  # Steps between mask updates (masks are optimizer state: in every checkpoint).
  t.pruning.update_every = 100
  return t


def eval() -> ml_collections.ConfigDict:  # pylint: disable=redefined-builtin
  """`config.eval` (lmjax.train.evaluation)."""
  e = ml_collections.ConfigDict()
  # Eval batch size (sentences).
  e.batch_size = 256
  # Greedy-decode length for decode metrics (0 = task target length).
  e.decode_max_length = 0
  # Decoded samples printed at the end.
  e.num_samples = 5
  # Taggers: added to the outside tag 'O''s score at prediction (Viterbi or argmax); < 0
  # trades precision for recall (Minkov et al., 2006). Tune it on the eval split.
  e.outside_bias = 0.0
  return e


def _activations(batch, **axes) -> list:
  """Rules of the activation names (lmjax.parallel.ACTIVATION_AXES): the batch over
  `batch`, the names in `axes` over their mesh axes, the rest replicated."""
  names = ('length', 'embed', 'mlp', 'heads', 'kv', 'vocab')
  return ([('activation_batch', batch)]
          + [(f'activation_{n}', axes.get(n)) for n in names])


def add_parallelism(c: ml_collections.ConfigDict) -> None:
  """Adds `config.mesh`, `logical_axis_rules`, `sharding` and `sharding_rules` (lmjax.parallel)."""
  # Named mesh axes and sizes; -1 = all remaining devices.
  c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'model': 1})
  # Multi-slice jobs (TPU slices joined by the data-center network): how many slices each
  # mesh axis spans (config.mesh sizes are totals). All 1 = one slice; e.g. {'data': 2} on
  # two v5e-256 slices puts data parallelism across them and everything else within one.
  c.mesh_dcn = ml_collections.ConfigDict({'data': 1, 'fsdp': 1, 'model': 1})
  # Logical axis → mesh axis (None = replicated). Data parallelism by default. Parameters
  # and activations have separate names (activation_* name what the models constrain).
  c.logical_axis_rules = [('batch', ('data', 'fsdp')), ('length', None), ('embed', None),
                          ('mlp', None), ('heads', None), ('kv', None), ('vocab', None),
                          ('hidden', None), ('hidden_in', None), ('classes', None),
                          ('layers', None)] + _activations(('data', 'fsdp'))
  # Sharding strategy: a key of config.sharding_rules, or 'custom' = config.logical_axis_rules.
  c.sharding = 'dp'
  # Named rule tables (logical axis → mesh axes; the first rule whose mesh axes are free wins).
  c.sharding_rules = ml_collections.ConfigDict({
      # Data parallelism: params and optimizer state replicated.
      'dp': list(c.logical_axis_rules),
      # FSDP (ZeRO-3): params and optimizer state split over 'fsdp' along embed/hidden;
      # activations keep 'fsdp' on the batch, so those rules do not apply to them.
      'fsdp': [('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('hidden', 'fsdp'),
               ('length', None), ('mlp', None), ('heads', None), ('kv', None), ('vocab', None),
               ('hidden_in', None), ('classes', None), ('layers', None)]
              + _activations(('data', 'fsdp')),
      # FSDP + tensor parallelism: mlp/heads/hidden over 'model', embed over 'fsdp'.
      'fsdp_tp': [('batch', ('data', 'fsdp')), ('mlp', 'model'), ('heads', 'model'),
                  ('hidden', 'model'), ('embed', 'fsdp'), ('length', None), ('kv', None),
                  ('vocab', None), ('hidden_in', None), ('classes', None), ('layers', None)]
                 + _activations(('data', 'fsdp'), mlp='model', heads='model'),
  })


def add_runtime(c: ml_collections.ConfigDict) -> None:
  """Adds `config.compilation_cache_dir` and `config.distributed` (lmjax.runtime)."""
  # JAX's persistent compilation cache folder, set at process start-up (lmjax/runtime.py);
  # reruns of the same shapes then skip compiling. '' = off.
  c.compilation_cache_dir = ''

  c.distributed = ml_collections.ConfigDict()
  # Call jax.distributed.initialize (multi-host: one process per host).
  c.distributed.enabled = False
  # Coordinator 'host:port' ('' = auto-detect on Cloud TPU / SLURM).
  c.distributed.coordinator_address = ''
  # Number of processes (-1 = auto).
  c.distributed.num_processes = -1
  # This process's id (-1 = auto).
  c.distributed.process_id = -1
