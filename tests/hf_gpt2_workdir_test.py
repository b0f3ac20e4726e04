"""experiments/import_hf.py → decode.py / evaluate → experiments/export_hf.py with a tiny GPT-2
(every tensor perturbed) whose byte-level BPE tokenizer.json is trained here with the
`tokenizers` library, on an LM text task (configs/shakespeare_char.py) written to a
temporary data dir; hub-style files (no `transformer.` prefix, causal-mask buffers) and a
missing tokenizer.json."""

import json
import os
import sys

import flax
import jax
import numpy as np
import pytest

from tests import hf_parity
from tests import scripts
from lmjax.data import tokenizers as tok_lib
from lmjax.hf import convert
from lmjax.hf import gpt2
from lmjax.hf.files import HFError
from lmjax.tools import inference
from lmjax.tools import workdir_tools
from lmjax.train import checkpoint as ckpt_lib
from configs import shakespeare_char

torch, transformers = hf_parity.torch, hf_parity.transformers
tokenizers = pytest.importorskip('tokenizers')
REPO = scripts.REPO
WORDS = ('a man rides a red bike . two dogs run in the park . the woman sings a song . '
         'children play on the green grass . a cat sleeps under the old table .').split()
CONTINUATION = 20  # greedy tokens compared with transformers' generate
LAYERS = 2


def _sentences(n, seed):
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, size=rng.integers(4, 10))) for _ in range(n)]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """(hf_dir, data_dir, hf_model, hf_tokenizer): GPT2LMHeadModel.save_pretrained's files
  plus tokenizer.json, whose last id is <|endoftext|> (as GPT-2's)."""
  root = tmp_path_factory.mktemp('hf_gpt2')
  data = root / 'data' / 'tinyshakespeare'
  data.mkdir(parents=True)
  text = _sentences(300, 0)
  (data / 'input.txt').write_text('\n'.join(text) + '\n')
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(text, vocab_size=300, min_frequency=2, show_progress=False)
  bpe.add_special_tokens(['<|endoftext|>'])  # appended: the last id
  vocab = bpe.get_vocab_size()
  end = bpe.token_to_id('<|endoftext|>')
  assert end == vocab - 1
  config = transformers.GPT2Config(
      vocab_size=vocab, n_embd=32, n_head=4, n_layer=LAYERS, n_positions=64, resid_pdrop=0.0,
      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=end, eos_token_id=end)
  torch.manual_seed(0)
  model = hf_parity.perturbed(transformers.GPT2LMHeadModel(config))
  hf_dir = hf_parity.save(model, str(root / 'hf'))
  bpe.save(os.path.join(hf_dir, gpt2.TOKENIZER_FILE))
  hf_tokenizer = transformers.PreTrainedTokenizerFast(
      tokenizer_file=os.path.join(hf_dir, gpt2.TOKENIZER_FILE), eos_token='<|endoftext|>')
  return hf_dir, str(root / 'data'), model, hf_tokenizer


def _config_arg(data_dir):
  return f'--config={REPO}/configs/shakespeare_char.py:{data_dir},runlocal'


def _prompts(hf_tokenizer, n=3):
  """n prompt lines of one token count P (so that --max_length=P + 20 continues each by 20)."""
  by_length = {}
  for s in _sentences(200, 9):
    by_length.setdefault(len(hf_tokenizer.encode(s)), []).append(s)
  length, lines = max(((k, v) for k, v in by_length.items() if len(v) >= n and k <= 12))
  return length, lines[:n]


def _lm_logits(model, ids):
  """A transformers causal LM's logits (B, T, V) for GPT-2 ids (B, T)."""
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()


def test_import_decode_evaluate_export(setup, tmp_path):
  hf_dir, data_dir, hf_model, hf_tokenizer = setup
  workdir, exported = str(tmp_path / 'gpt2'), str(tmp_path / 'exported')
  out = hf_parity.run_experiment('import_hf.py', f'--hf_dir={hf_dir}', f'--workdir={workdir}',
                                 _config_arg(data_dir))
  assert '"family": "gpt2"' in out
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  assert config['model']['never_emit'] == list(gpt2.NEVER_EMITTED)
  assert config['task']['tokenizer']['type'] == 'hf_bpe'
  bridged = tok_lib.load(os.path.join(workdir, 'tokenizers', 'vocab.json'))
  assert bridged.vocab_size == len(hf_tokenizer) + 2  # lmjax's BOS/pad and unknown rows

  # decode.py: the 20-token greedy continuation that transformers' generate gives.
  length, prompts = _prompts(hf_tokenizer)
  (tmp_path / 'prompts.txt').write_text('\n'.join(prompts) + '\n')
  hf_parity.run_experiment('decode.py', f'--workdir={workdir}',
                           f'--input={tmp_path / "prompts.txt"}',
                           f'--output={tmp_path / "decoded.txt"}',
                           f'--max_length={length + CONTINUATION}')
  decoded = (tmp_path / 'decoded.txt').read_text().split('\n')[:-1]  # (byte tokens may be \r)
  end = hf_tokenizer.eos_token_id
  want = []
  for prompt in prompts:
    ids = [end] + hf_tokenizer.encode(prompt)  # GPT-2 reads <|endoftext|> where lmjax BOS
    with torch.no_grad():
      generated = hf_model.generate(
          input_ids=torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
          max_new_tokens=CONTINUATION, do_sample=False, num_beams=1, pad_token_id=end)
    text = hf_tokenizer.decode(generated[0, len(ids):].tolist(), skip_special_tokens=True)
    want.append(text.replace('\n', ' '))  # as decode.py writes it: one line per prompt
  assert all(want), want
  assert decoded == want

  # With <|endoftext|> the best token, decoders choose EOS (1), never its tied copy BOS (0)
  # that argmax would pick first: config.model.never_emit reaches Run's decoders.
  run = inference.Run(workdir)
  params, _ = run.restore()
  flat = hf_parity.flat_numpy(params)
  big = np.full(flat['embed/embedding'].shape[1], 1.0, np.float32)
  flat['embed/embedding'] = flat['embed/embedding'].copy()
  flat['embed/embedding'][:gpt2.RESERVED] = big  # rows BOS, EOS, unknown: still one vector
  flat['decoder/final_ln/scale'] = np.zeros_like(flat['decoder/final_ln/scale'])
  flat['decoder/final_ln/bias'] = big  # every position's output is `big`: EOS's row wins
  forced = jax.device_put(flax.traverse_util.unflatten_dict(flat, sep='/'), run.param_shardings)
  options = inference.DecodeOptions(max_length=length + CONTINUATION)
  ids, _ = run.encode_line(prompts[0], options)
  continuation = run.decode_ids(forced, [ids], options)[0]
  assert continuation[0] == tok_lib.EOS_ID and not continuation[1:].any(), continuation

  report = workdir_tools.evaluate_workdir(workdir)  # evaluate.py's library call
  assert np.isfinite(report['metrics']['loss']), report

  # export_hf.py: transformers loads it back, to the original's logits, and its tokenizer.
  hf_parity.run_experiment('export_hf.py', f'--workdir={workdir}', f'--output={exported}')
  reloaded, info = transformers.GPT2LMHeadModel.from_pretrained(exported,
                                                                output_loading_info=True)
  assert not any(info.values()), info  # nothing missing, unexpected or mismatched
  batch = np.random.default_rng(1).integers(0, end + 1, size=(2, 40))
  hf_parity.assert_logits_close(_lm_logits(reloaded.eval(), batch), _lm_logits(hf_model, batch))
  with open(os.path.join(hf_dir, gpt2.TOKENIZER_FILE)) as a, open(
      os.path.join(exported, gpt2.TOKENIZER_FILE)) as b:
    assert a.read() == b.read()


def _unprefixed(tensors):
  """GPT2Model's names (the hub's `gpt2` files), with its causal-mask buffers."""
  for name in [n for n in tensors if n.startswith('transformer.')]:
    tensors[name[len('transformer.'):]] = tensors.pop(name)
  for i in range(LAYERS):
    tensors[f'h.{i}.attn.bias'] = np.tril(np.ones((64, 64), np.float32))[None, None]
    tensors[f'h.{i}.attn.masked_bias'] = np.asarray(-1e4, np.float32)


def _params(workdir):
  return flax.traverse_util.flatten_dict(ckpt_lib.load_params(workdir)[0], sep='/')


def test_hub_names_without_prefix_and_mask_buffers_import_the_same(setup, tmp_path):
  hf_dir, data_dir, _, _ = setup
  config = shakespeare_char.get_config(f'{data_dir},runlocal')
  hub = hf_parity.edited_copy(hf_dir, str(tmp_path / 'hub'), _unprefixed)
  convert.import_checkpoint(hf_dir, str(tmp_path / 'a'), config)
  report = convert.import_checkpoint(hub, str(tmp_path / 'b'), config)
  assert report['family'] == 'gpt2'
  prefixed, unprefixed = _params(str(tmp_path / 'a')), _params(str(tmp_path / 'b'))
  assert sorted(unprefixed) == sorted(prefixed)
  for path, value in prefixed.items():
    np.testing.assert_array_equal(unprefixed[path], value, err_msg=path)


@pytest.mark.parametrize('stray,name', [
    ('h.0.attn.extra', r'h\.0\.attn\.extra'),  # unprefixed, not a buffer
    ('transformer.h.0.mlp.bias', r'transformer\.h\.0\.mlp\.bias'),  # a buffer's name elsewhere
    ('h.9.attn.weight', r'h\.9\.attn\.weight'),
], ids=['unprefixed', 'not_a_buffer', 'no_such_layer'])
def test_a_stray_tensor_beside_the_buffers_is_still_one_error_line(setup, tmp_path, stray, name):
  hf_dir, data_dir, _, _ = setup

  def edit(tensors):
    _unprefixed(tensors)
    tensors[stray] = np.ones(3, np.float32)

  hub = hf_parity.edited_copy(hf_dir, str(tmp_path / 'hub'), edit)
  workdir = str(tmp_path / 'w')
  with pytest.raises(HFError, match=rf'^[^\n]*tensor {name} \(3,\) matches no parameter of '
                     r'the model$'):
    convert.import_checkpoint(hub, workdir, shakespeare_char.get_config(f'{data_dir},runlocal'))
  assert not os.path.exists(workdir) and not os.path.exists(workdir + '.import-tmp')


def test_a_missing_tokenizer_json_is_one_error_line_and_writes_nothing(setup, tmp_path):
  hf_dir, data_dir, _, _ = setup
  copy = hf_parity.edited_copy(hf_dir, str(tmp_path / 'no_tokenizer'), lambda t: None)
  os.remove(os.path.join(copy, gpt2.TOKENIZER_FILE))
  workdir = str(tmp_path / 'w')
  proc = scripts.run([sys.executable, os.path.join(REPO, 'experiments', 'import_hf.py'),
                      f'--hf_dir={copy}', f'--workdir={workdir}', _config_arg(data_dir)],
                     text=True)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'error: {copy}: no tokenizer.json ('), lines
  assert not os.path.exists(workdir) and not os.path.exists(workdir + '.import-tmp')


def test_hf_bpe_tokenizer_maps_gpt2_ids_and_round_trips(setup, tmp_path, monkeypatch):
  hf_dir, _, _, hf_tokenizer = setup
  with open(os.path.join(hf_dir, gpt2.TOKENIZER_FILE)) as f:
    bridged = tok_lib.HFBPETokenizer(f.read())
  text = 'two dogs sing under the red table'
  hf = hf_tokenizer.encode(text)
  assert bridged.encode(text) == gpt2.lmjax_ids(hf, len(hf_tokenizer)).tolist()
  assert bridged.encode('a cat<|endoftext|>')[-1] == tok_lib.EOS_ID
  ids = [0] + bridged.encode(text) + [tok_lib.UNK_ID, tok_lib.EOS_ID] + bridged.encode(' x')
  assert bridged.decode(ids) == text  # BOS/pad and unknown dropped, stops at EOS
  path = str(tmp_path / 'vocab.json')
  bridged.save(path, {'type': 'hf_bpe'})
  loaded = tok_lib.load(path)
  assert loaded.options == {'type': 'hf_bpe'} and loaded.encode(text) == bridged.encode(text)
  with pytest.raises(ValueError, match=r"^config\.task\.tokenizer\.type='hf_bpe' is a Hugging "
                     'Face tokenizer that experiments/import_hf.py writes'):
    tok_lib.build([text], {'type': 'hf_bpe'})
  monkeypatch.setitem(sys.modules, 'tokenizers', None)  # not installed
  with pytest.raises(ValueError, match=r'vocab\.json: .*needs the `tokenizers` package: pip '
                     r"install 'lmjax\[hf\]'"):
    tok_lib.load(path)
