"""Two `jax.distributed` processes (gloo, localhost) stream one preprocessed folder.

Each process reads its rows of every global batch: over two epochs the two processes'
examples are disjoint halves of each epoch whose union is the whole epoch, and an
iterator resumed from a checkpointed state (pack mode, in both processes) continues
exactly as the uninterrupted one. (tests/pod_test.py resumes the whole trainer
with two processes.)
"""

import json
import os
import sys
import textwrap

import numpy as np

from lmjax.data import records
from tests import pod_test
from tests import scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES, GLOBAL_BATCH = 96, 8

WORKER = textwrap.dedent('''
    import json, sys


    def main():
      process_id, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
      import jax
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=process_id)
      from lmjax.data import records, stream
      from tests import stream_test
      source = records.open_records(folder)
      kw = dict(global_batch_size=8, lengths={'inputs': 16, 'targets': 16}, seed=5,
                process_index=jax.process_index(), process_count=jax.process_count())
      plain = stream.from_records(source, **kw)
      ids = [int(row[0]) - 3 for _ in range(2 * 96 // 8) for row in next(plain)['targets']]
      make = lambda: stream.from_records(source, batching={'mode': 'pack'}, workers=1, **kw)
      same = stream_test.resume_matches(make, 5, 12)
      print('RESULT ' + json.dumps({'ids': ids, 'resume_equal': same}), flush=True)


    if __name__ == '__main__':  # Grain's worker processes import this file again
      main()
''')


def write_folder(folder):
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  spec = {'inputs': [], 'targets': []}
  writer = records.ShardWriter(folder, records_per_shard=40)  # 3 shards
  for i in range(NUM_EXAMPLES):
    ex = {'inputs': rng.integers(3, 50, rng.integers(1, 9)),
          'targets': np.concatenate([[i + 3], rng.integers(3, 50, rng.integers(0, 8))])}
    writer.write(records.encode(ex, spec, 'uint16'))
  records.write_index(folder, {'features': spec, 'dtype': 'uint16', 'num_examples': NUM_EXAMPLES,
                               'shards': writer.close(), 'tokenizer_hash': 'x'})


def test_two_processes_split_each_epoch_and_resume_exactly(tmp_path):
  folder = str(tmp_path / 'data')
  write_folder(folder)
  script = tmp_path / 'worker.py'
  script.write_text(WORKER)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  port = str(pod_test.free_port())
  logs = [str(tmp_path / f'worker.{i}.log') for i in range(2)]
  procs = [scripts.start([sys.executable, str(script), str(i), port, folder], logs[i], cwd=REPO,
                         env=env) for i in range(2)]
  results = []
  try:
    for p, log in zip(procs, logs):
      code = p.wait(pod_test.TIMEOUT_S)
      out = open(log).read()
      assert code == 0, out[-3000:]
      results.append(json.loads(out.split('RESULT ', 1)[1].splitlines()[0]))
  finally:
    for p in procs:
      p.kill()
  half = NUM_EXAMPLES // 2
  for epoch in range(2):
    parts = [set(r['ids'][epoch * half:(epoch + 1) * half]) for r in results]
    assert len(parts[0]) == len(parts[1]) == half
    assert not parts[0] & parts[1]
    assert parts[0] | parts[1] == set(range(NUM_EXAMPLES))
  assert results[0]['ids'][:half] != results[0]['ids'][half:2 * half]  # reshuffled per epoch
  assert all(r['resume_equal'] for r in results)
