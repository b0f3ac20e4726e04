"""experiments/import_hf.py → evaluate/decode/fine-tune → experiments/export_hf.py, with a tiny
T5 v1.1 that transformers builds from a config (every tensor perturbed), a SentencePiece
model trained here as its spiece.model, and a text task written to a temporary data dir."""

import json
import os

import flax

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests import hf_parity
from tests import scripts
from lmjax.data import tokenizers as tok_lib
from lmjax.hf import convert
from lmjax.hf.files import HFError
from lmjax.tools import inference
from lmjax.tools import workdir_tools
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import reporting
from configs import multi30k_transformer

torch, transformers = hf_parity.torch, hf_parity.transformers
REPO = scripts.REPO
HF_VOCAB = 128
WORDS = ('a man rides a red bike . two dogs run in the park . the woman sings a song . '
         'children play on the green grass . a cat sleeps under the old table .').split()


def _sentences(n, seed):
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, size=rng.integers(4, 10))) for _ in range(n)]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """(hf_dir, data_dir, hf_model, tokenizer)."""
  root = tmp_path_factory.mktemp('hf_t5')
  data = root / 'data' / 'multi30k' / 'tok'
  data.mkdir(parents=True)
  for split, n, seed in (('train', 200, 0), ('val', 16, 1), ('test_2016_flickr', 16, 2)):
    src = _sentences(n, seed)
    (data / f'{split}.lc.norm.tok.en').write_text('\n'.join(src) + '\n')
    (data / f'{split}.lc.norm.tok.de').write_text('\n'.join(s.upper() for s in src) + '\n')
  tokenizer = tok_lib.SentencePieceTokenizer.train(
      _sentences(200, 0) + [s.upper() for s in _sentences(200, 0)], vocab_size=100)
  assert tokenizer.vocab_size <= HF_VOCAB
  config = transformers.T5Config(
      vocab_size=HF_VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
      feed_forward_proj='gated-gelu', tie_word_embeddings=False, dropout_rate=0.0,
      initializer_factor=0.3, decoder_start_token_id=0)
  model = hf_parity.perturbed(transformers.T5ForConditionalGeneration(config))
  hf_dir = hf_parity.save(model, str(root / 'hf'))
  with open(os.path.join(hf_dir, convert.SPIECE), 'wb') as f:
    f.write(tokenizer.model_proto)
  return hf_dir, str(root / 'data'), model, tokenizer


def _logits_of_workdir(workdir, inputs, targets):
  run = inference.Run(workdir)
  params, _ = run.restore()
  return np.asarray(run.model.apply({'params': params}, {'inputs': inputs, 'targets': targets},
                                    train=False))


def test_import_evaluate_decode_finetune_export(setup, tmp_path):
  hf_dir, data_dir, hf_model, tokenizer = setup
  workdir, tuned, exported = (str(tmp_path / n) for n in ('t5', 't5_ft', 'exported'))
  config_arg = f'--config={REPO}/configs/multi30k_transformer.py:{data_dir},runlocal'
  out = hf_parity.run_experiment('import_hf.py', f'--hf_dir={hf_dir}', f'--workdir={workdir}',
                                 config_arg)
  assert '"family": "t5"' in out

  # The workdir's parameters give the PyTorch model's logits.
  inputs = np.stack([np.pad(tokenizer.encode(s) + [1], (0, 32 - len(tokenizer.encode(s)) - 1))
                     for s in _sentences(4, 5)]).astype(np.int32)
  targets = hf_parity.source_batch(tokenizer.vocab_size, [20, 13, 20, 7], 20, seed=3)
  theirs = hf_parity.seq2seq_logits(hf_model, inputs, targets)
  hf_parity.assert_logits_close(_logits_of_workdir(workdir, inputs, targets), theirs)
  report = workdir_tools.evaluate_workdir(workdir)  # evaluate.py's library call
  assert report['checkpoint']['step'] == 0 and report['metrics']['bleu'] >= 0, report

  # decode.py on a text file: what transformers' greedy search writes, detokenized (lmjax's
  # seq2seq tasks end sources without EOS).
  sources = _sentences(3, 7)
  (tmp_path / 'sources.txt').write_text('\n'.join(sources) + '\n')
  hf_parity.run_experiment('decode.py', f'--workdir={workdir}',
                           f'--input={tmp_path / "sources.txt"}',
                           f'--output={tmp_path / "decoded.txt"}', '--max_length=12')
  decoded = (tmp_path / 'decoded.txt').read_text().splitlines()
  with torch.no_grad():
    ids = [tokenizer.encode(s) for s in sources]
    want = [tokenizer.decode(hf_model.generate(input_ids=torch.tensor([i]), max_new_tokens=12,
                                               do_sample=False, num_beams=1)[0, 1:].tolist())
            for i in ids]
  assert decoded == want

  # Fine-tune on the task: the loss falls; then export and load in transformers.
  hf_parity.run_experiment(
      'train.py', f'--config={REPO}/configs/finetune.py:{workdir}', f'--workdir={tuned}',
      '--config.train.num_train_steps=30', '--config.train.log_every=10',
      '--config.train.eval_every=30', '--config.train.checkpoint_every=30',
      '--config.eval.decode_max_length=4',  # the final eval's BLEU decodes are not checked
      '--config.optimizer.learning_rate=0.003')
  train = [r for r in reporting.read_jsonl(os.path.join(tuned, 'metrics.jsonl'))
           if r['split'] == 'train']
  assert train[-1]['loss'] < train[0]['loss'] - 0.3, [r['loss'] for r in train]
  hf_parity.run_experiment('export_hf.py', f'--workdir={tuned}', f'--output={exported}')
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(exported).eval()
  again = hf_parity.seq2seq_logits(reloaded, inputs, targets)
  hf_parity.assert_logits_close(_logits_of_workdir(tuned, inputs, targets), again)
  assert os.path.exists(os.path.join(exported, convert.SPIECE))


@pytest.mark.parametrize('edit,message', [
    (lambda t: t.update({'encoder.extra.weight': np.ones(3, np.float32)}),
     r'^[^\n]*tensor encoder\.extra\.weight \(3,\) matches no parameter of the model$'),
    (lambda t: t.pop('decoder.block.1.layer.2.DenseReluDense.wo.weight'),
     r'^[^\n]*tensor decoder\.block\.1\.layer\.2\.DenseReluDense\.wo\.weight is missing '
     r'\(model parameter decoder/layer_1/mlp/wo/kernel \(48, 32\)\)$'),
    (lambda t: t.update({'encoder.final_layer_norm.weight': np.ones(31, np.float32)}),
     r'^[^\n]*tensor encoder\.final_layer_norm\.weight has shape \(31,\) .*model parameter '
     r'encoder/final_ln/scale has \(32,\)$'),
], ids=['unmatched', 'missing', 'shape'])
def test_a_bad_checkpoint_is_one_line_naming_the_tensor_and_writes_nothing(setup, tmp_path, edit,
                                                                          message):
  hf_dir, data_dir, _, _ = setup
  broken = hf_parity.edited_copy(hf_dir, str(tmp_path / 'broken'), edit)
  workdir = str(tmp_path / 'w')
  with pytest.raises(HFError, match=message):
    convert.import_checkpoint(broken, workdir,
                              multi30k_transformer.get_config(f'{data_dir},runlocal'))
  assert not os.path.exists(workdir) and not os.path.exists(workdir + '.import-tmp')


def test_sharded_bfloat16_checkpoint_imports_as_its_float32_cast(setup, tmp_path):
  """Shards listed by model.safetensors.index.json, stored in bfloat16: read whole, cast to
  float32 (or kept as bfloat16 with param_dtype='keep')."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  hf_dir, data_dir, _, _ = setup
  tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in
             load_file(os.path.join(hf_dir, 'model.safetensors')).items()}
  sharded = tmp_path / 'sharded'
  sharded.mkdir()
  for name in ('config.json', convert.SPIECE):
    (sharded / name).write_bytes(open(os.path.join(hf_dir, name), 'rb').read())
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate((names[::2], names[1::2])):
    shard = f'model-0000{i + 1}-of-00002.safetensors'
    save_file({k: tensors[k] for k in part}, str(sharded / shard), metadata={'format': 'pt'})
    weight_map.update({k: shard for k in part})
  (sharded / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  config = multi30k_transformer.get_config(f'{data_dir},runlocal')
  for dtype, want in (('float32', np.float32), ('keep', ml_dtypes.bfloat16)):
    workdir = str(tmp_path / dtype)
    report = convert.import_checkpoint(str(sharded), workdir, config, param_dtype=dtype)
    assert report['tensors'] == len(tensors)
    params = flax.traverse_util.flatten_dict(ckpt_lib.load_params(workdir)[0], sep='/')
    embed = params['source_embed/embedding']
    assert embed.dtype == want
    np.testing.assert_array_equal(embed.astype(np.float32),
                                  tensors['shared.weight'].astype(np.float32))
