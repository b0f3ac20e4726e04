"""Where a compiled step's time goes: per-HLO-op thread time of a `jax.profiler` trace.

`profile_compiled` runs a compiled executable under `jax.profiler`, reads the trace back
with `jax.profiler.ProfileData` and sums the time of every HLO instruction the XLA
threads ran. `parse_hlo` maps each instruction of the compiled HLO text to a category
(matmul, elementwise, reduction, layout, data movement, ...) and its `op_name`
metadata (the JAX source op), so the result says which kind of work - and which model
op - takes the step's time.

An event lasts from an instruction's start to its end on the thread that runs it; a
matmul split across the pool's threads is one event (its helpers' work is not labelled),
and independent instructions may overlap on different threads. So the op time is close
to, not exactly, the wall time, and the shares are shares of the op time.
"""

import collections
import dataclasses
import glob
import re
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

import jax

from lmjax.bench import jax_train

CATEGORIES = ('matmul', 'elementwise', 'reduction', 'layout (copy/transpose)',
              'data movement (slice/gather/scatter)', 'other')
# Instructions that only contain others (their children are events of their own).
_CONTAINERS = {'while', 'conditional', 'call'}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_LAYOUT = {'copy', 'transpose', 'bitcast', 'parameter', 'reshape', 'broadcast', 'constant', 'fusion',
           'tuple', 'get-tuple-element'}
_MOVEMENT = {'slice', 'dynamic-slice', 'dynamic-update-slice', 'gather', 'scatter',
             'concatenate', 'pad'}


@dataclasses.dataclass
class Instruction:
  """One HLO instruction of the compiled module.

  Attributes:
    opcode: e.g. 'fusion', 'dot', 'copy'.
    category: one of CATEGORIES (a fusion takes the category of its body).
    op_name: the JAX op it came from ('' if the HLO has no metadata).
  """
  opcode: str
  category: str
  op_name: str


def _category(opcodes: set) -> str:
  """The category of an instruction, or of a fusion from the opcodes of its body.

  Priority: a dot makes a matmul, a reduce a reduction; arithmetic (anything besides
  layout and slicing ops) makes elementwise work, whatever slicing is fused into it.
  """
  if opcodes & {'dot', 'convolution'}:
    return 'matmul'
  if opcodes & {'reduce', 'reduce-window', 'sort'}:
    return 'reduction'
  if opcodes & ({'custom-call', 'rng', 'rng-bit-generator'} | _CONTAINERS):
    return 'other'
  if opcodes - _LAYOUT - _MOVEMENT:
    return 'elementwise'
  if opcodes & _MOVEMENT:
    return 'data movement (slice/gather/scatter)'
  return 'layout (copy/transpose)'


def parse_hlo(text: str) -> Dict[str, Instruction]:
  """Instruction name → Instruction for every instruction of compiled HLO text.

  Args:
    text: `compiled.as_text()`.

  Returns:
    The map (fusion bodies' own instructions included; they are not profiler events).
  """
  opcodes: Dict[str, set] = collections.defaultdict(set)  # computation → opcodes in it
  nested: Dict[str, set] = collections.defaultdict(set)  # computation → fusions' bodies in it
  calls: Dict[str, str] = {}  # fusion instruction → the computation it calls
  found: Dict[str, Tuple[str, str]] = {}  # instruction → (opcode, op_name)
  computation = ''
  for line in text.splitlines():
    head = _COMPUTATION.match(line)
    if head and '=' not in line.split('{')[0]:
      computation = head.group(1)
      continue
    inst = _INSTRUCTION.match(line)
    if not inst:
      continue
    name, opcode = inst.groups()
    opcodes[computation].add(opcode)
    op_name = _OP_NAME.search(line)
    found[name] = (opcode, op_name.group(1) if op_name else '')
    called = _CALLS.search(line)
    if opcode == 'fusion' and called:
      calls[name] = called.group(1)
      nested[computation].add(called.group(1))

  def body(computation_name: str, depth: int = 0) -> set:
    """Opcodes of a fusion body, nested fusions' bodies included."""
    out = set(opcodes.get(computation_name, ()))
    for inner in nested.get(computation_name, ()) if depth < 8 else ():
      out |= body(inner, depth + 1)
    return out

  return {name: Instruction(opcode, _category(body(calls[name]) if name in calls else {opcode}),
                            op_name)
          for name, (opcode, op_name) in found.items()}


@dataclasses.dataclass
class Breakdown:
  """Thread time of profiled calls, per category and per JAX op.

  Attributes:
    calls: profiled calls.
    wall_ms: wall time of one call (median of the profiled calls).
    threads: XLA threads that ran instructions.
    by_category: category → ms per call (summed event durations).
    by_op: (category, op_name) → ms per call.
  """
  calls: int
  wall_ms: float
  threads: int
  by_category: Dict[str, float]
  by_op: Dict[Tuple[str, str], float]

  @property
  def busy_ms(self) -> float:
    """Op time per call: the instruction events' durations, summed."""
    return sum(self.by_category.values())


def _op_key(op_name: str) -> str:
  """A short op name: the jit prefix and layer numbers dropped (layers pooled)."""
  op_name = re.sub(r'layer_\d+', 'layer_N', re.sub(r'^jit\([^)]*\)/', '', op_name))
  if len(op_name) > 90:  # keep the innermost scopes, cut at a '/'
    op_name = '…/' + op_name[-90:].split('/', 1)[-1]
  return op_name


def summarize_trace(xplane_path: str, instructions: Dict[str, Instruction], calls: int,
                    wall_s: List[float]) -> Breakdown:
  """Sums the XLA threads' instruction events of one trace file.

  Args:
    xplane_path: the `.xplane.pb` written by jax.profiler.
    instructions: `parse_hlo` of the profiled executable.
    calls: how many calls the trace holds (the sums are divided by it).
    wall_s: wall seconds of each profiled call.

  Returns:
    The Breakdown.
  """
  data = jax.profiler.ProfileData.from_file(xplane_path)
  by_category: Dict[str, float] = collections.Counter()
  by_op: Dict[Tuple[str, str], float] = collections.Counter()
  threads = set()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):
        continue
      for event in line.events:
        inst = instructions.get(event.name)
        if inst is None or inst.opcode in _CONTAINERS:
          continue
        threads.add(line.name)
        ms = event.duration_ns / 1e6 / calls
        by_category[inst.category] += ms
        by_op[(inst.category, _op_key(inst.op_name) or event.name)] += ms
  wall_s = sorted(wall_s)
  return Breakdown(calls, 1e3 * wall_s[len(wall_s) // 2], len(threads), dict(by_category),
                   dict(by_op))


def profile_compiled(call: Callable[[], Any], hlo_text: str, calls: int = 3,
                     warmup: int = 2) -> Breakdown:
  """Profiles `calls` calls of `call` (after `warmup` untimed ones).

  Args:
    call: runs one step of a compiled executable and returns its outputs.
    hlo_text: the executable's `as_text()`.
    calls: profiled calls.
    warmup: calls before the trace starts.

  Returns:
    The Breakdown.
  """
  for _ in range(warmup):
    jax.block_until_ready(call())
  wall = []
  with tempfile.TemporaryDirectory() as logdir:
    jax.profiler.start_trace(logdir)
    try:
      for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(call())
        wall.append(time.perf_counter() - start)
    finally:
      jax.profiler.stop_trace()
    path = sorted(glob.glob(f'{logdir}/**/*.xplane.pb', recursive=True))[-1]
    return summarize_trace(path, parse_hlo(hlo_text), calls, wall)


def format_breakdown(b: Breakdown, top: int = 15) -> str:
  """The breakdown as text: categories (ms, % of op time) and the top non-matmul ops.

  Args:
    b: the breakdown.
    top: how many non-matmul ops to list.
  """
  busy = b.busy_ms
  lines = [f'wall {b.wall_ms:.1f} ms per call; op time {busy:.1f} ms (instruction events on '
           f'{b.threads} XLA threads, summed; see lmjax/bench/profile.py)', '',
           f'{"category":38s} {"ms":>9s} {"% op time":>9s}']
  for name in CATEGORIES:
    ms = b.by_category.get(name, 0.0)
    lines.append(f'{name:38s} {ms:9.1f} {100 * ms / busy:9.1f}')
  lines += ['', f'top {top} non-matmul ops (ms per call, % of op time):']
  others = sorted(((ms, key) for key, ms in b.by_op.items() if key[0] != 'matmul'), reverse=True)
  for ms, (category, op) in others[:top]:
    lines.append(f'{ms:9.1f} {100 * ms / busy:5.1f}%  [{category.split(" ")[0]}] {op}')
  return '\n'.join(lines)


def profile_train_step(config, sizes: Dict[str, int], example_batch, calls: int = 3,
                       warmup: int = 2) -> Breakdown:
  """Profiles the trainer's train step (as `lmjax.bench.jax_train` builds and times it).

  Args:
    config: experiment config (e.g. `shapes.transformer_config(...)`).
    sizes: data-dependent model sizes (vocab_size=…, target_vocab_size=…).
    example_batch: host-local numpy batch, the one that is run.
    calls: profiled steps.
    warmup: steps before the trace starts.

  Returns:
    The Breakdown.
  """
  step, state, batch = jax_train.build_train_step(config, sizes, example_batch)
  compiled = step.lower(state, batch).compile()
  carry = {'state': state}

  def call():
    carry['state'], metrics = compiled(carry['state'], batch)  # state donated
    return metrics

  return profile_compiled(call, compiled.as_text(), calls, warmup)
