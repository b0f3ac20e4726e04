"""experiments/compare_reports.py: evaluate.py reports side by side, refusing incomparable ones."""

import json
import os
import sys

import pytest

from lmjax.tools import compare
from tests import scripts

SIG = 'nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:2.6.0'


def report(bleu, *, values=1000, quantization=None, sparsity=0.0, split='test', sig=SIG,
           examples=100):
  """An evaluate.py report with the fields the comparison reads."""
  r = {'split': split, 'num_examples': examples,
       'metrics': {'bleu': bleu, 'nll': 1.5},
       'signatures': {'bleu': sig},
       'params': {'values': values, 'bytes': 4 * values, 'sparsity': sparsity},
       'checkpoint': {'label': 'best-800'},
       'decoding': {'method': 'beam', 'beam_size': 5, 'alpha': 1.5, 'max_length': 64}}
  if quantization:
    r['quantization'] = quantization
    r['params']['bytes_int8'] = values + 64
  return r


def write(tmp_path, name, content):
  path = str(tmp_path / name)
  with open(path, 'w') as f:
    f.write(content if isinstance(content, str) else json.dumps(content))
  return path


def test_rows_give_deltas_evaluated_bytes_and_sparsity(tmp_path):
  paths = [write(tmp_path, 'a.json', report(30.0, values=2**20)),
           write(tmp_path, 'b.json', report(30.25, values=2**20, quantization='int8')),
           write(tmp_path, 'c.json', report(28.5, values=2**20, sparsity=0.8))]
  entries = [compare.parse_spec(f'dense={paths[0]}'), compare.parse_spec(paths[1]),
             compare.parse_spec(f'pruned 80={paths[2]}')]
  table = compare.rows(entries, 'bleu')
  assert [r['label'] for r in table] == ['dense', f'{tmp_path.name}/b', 'pruned 80']
  assert [r['delta'] for r in table] == [0.0, 0.25, -1.5]
  # float32 bytes unless the report was evaluated quantized: then the int8 bytes.
  assert [r['weight_bytes'] for r in table] == [4 * 2**20, 2**20 + 64, 4 * 2**20]
  text = compare.markdown(table, 'bleu', SIG)
  lines = text.splitlines()
  assert lines[2].startswith('| dense | 30.00 | +0.00 | 1,048,576 | 4.00 | float32 | 0.0 % | best-800 |')
  assert '| 30.25 | +0.25 | 1,048,576 | 1.00 | int8 |' in lines[3]
  assert '| 28.50 | -1.50 |' in lines[4] and '| 80.0 % |' in lines[4]
  assert lines[-1] == f'bleu signature: `{SIG}`'


@pytest.mark.parametrize('change,words', [
    ({'sig': SIG.replace('tok:none', 'tok:13a')}, 'different bleu signatures'),
    ({'split': 'validation'}, 'differ in split'),
    ({'examples': 99}, 'differ in number of examples'),
])
def test_incomparable_reports_are_refused_naming_both(tmp_path, change, words):
  a = write(tmp_path, 'a.json', report(30.0))
  b = write(tmp_path, 'b.json', report(31.0, **change))
  with pytest.raises(ValueError, match=words) as e:
    compare.rows([compare.parse_spec(a), compare.parse_spec(b)], 'bleu')
  assert a in str(e.value) and b in str(e.value)


def test_bad_report_files_name_the_flag_and_file(tmp_path):
  with pytest.raises(ValueError, match=r'--report=x=.*no such file'):
    compare.parse_spec(f'x={tmp_path}/missing.json')
  with pytest.raises(ValueError, match='is not JSON'):
    compare.parse_spec(write(tmp_path, 'bad.json', '{not json'))
  with pytest.raises(ValueError, match='not an evaluate.py report'):
    compare.parse_spec(write(tmp_path, 'list.json', [1, 2]))
  entry = compare.parse_spec(write(tmp_path, 'ok.json', report(30.0)))
  with pytest.raises(ValueError, match=r"--metric=chrf: .*ok.json has no 'chrf' \(it has \['bleu', 'nll'\]\)"):
    compare.rows([entry], 'chrf')


def test_script_prints_the_table_and_writes_markdown_and_png(tmp_path):
  a = write(tmp_path, 'a.json', report(30.0))
  b = write(tmp_path, 'b.json', report(29.0, quantization='int8'))
  md, png = str(tmp_path / 'out' / 't.md'), str(tmp_path / 'out' / 't.png')
  script = os.path.join(scripts.REPO, 'experiments', 'compare_reports.py')
  r = scripts.run([sys.executable, script, f'--report=fp32={a}', f'--report=int8={b}',
                   f'--output_md={md}', f'--output_png={png}'], text=True)
  assert r.returncode == 0, r.stderr
  assert '| int8 | 29.00 | -1.00 |' in r.stdout
  assert open(md).read() in r.stdout
  with open(png, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # Incomparable reports: exit 2, one line naming both files, nothing written.
  c = write(tmp_path, 'c.json', report(31.0, sig='other'))
  md2 = str(tmp_path / 'out' / 'u.md')
  r = scripts.run([sys.executable, script, f'--report={a}', f'--report={c}', f'--output_md={md2}'],
                  text=True)
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
  assert a in r.stderr and c in r.stderr and not os.path.exists(md2)
