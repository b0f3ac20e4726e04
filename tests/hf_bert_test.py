"""BERT (BertForMaskedLM) from Hugging Face format: masked-LM logits within 1e-4 of the
PyTorch model on a padded batch longer than 128 tokens, an export that transformers loads
back (nothing missing or unexpected) to the same logits, and one error line per bad
tensor. BERT does not generate, so there is no decode parity."""

import re

import numpy as np
import pytest

from tests import hf_parity
from lmjax.hf import bert
from lmjax.hf import convert
from lmjax.hf import families
from lmjax.hf import files
from lmjax.hf import gpt2
from lmjax.hf import mapping
from lmjax.hf.files import HFError

torch, transformers = hf_parity.torch, hf_parity.transformers
VOCAB = 96
WIDTH = 32


def hf_bert():
  config = transformers.BertConfig(
      vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=48, max_position_embeddings=160, type_vocab_size=2,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  torch.manual_seed(0)
  return hf_parity.perturbed(transformers.BertForMaskedLM(config))


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """The HF model, its tensors as read back, and the lmjax module, parameter shapes,
  parameters and config.model fields (+ 'vocab_size') it converts to."""
  hf_model = hf_bert()
  hf_dir = hf_parity.save(hf_model, str(tmp_path_factory.mktemp('hf')))
  hf_config, tensors = files.read_config(hf_dir), files.read_tensors(hf_dir)
  model_config = bert.model_config(hf_config, tensors)
  vocab = model_config.pop('vocab_size')
  model_config['dtype'] = 'float32'
  batch = {'inputs': np.ones((1, 8), np.int32)}
  module, shapes = hf_parity.expected_shapes(model_config, dict(vocab_size=vocab), batch)
  flat = mapping.to_lmjax(bert.table(model_config), tensors, shapes, hf_dir)
  return dict(hf_model=hf_model, hf_dir=hf_dir, tensors=tensors, module=module, shapes=shapes,
              params=hf_parity.nested(flat), model_config=dict(model_config, vocab_size=vocab))


def hf_mlm_logits(model, inputs):
  """A transformers masked LM's logits (B, S, V) for ids `inputs` (B, S; 0 = padding)."""
  with torch.no_grad():
    return model(input_ids=torch.tensor(inputs, dtype=torch.long),
                 attention_mask=torch.tensor(inputs > 0, dtype=torch.long)).logits.numpy()


def test_imported_bert_matches_transformers_and_exports_back(imported, tmp_path):
  hf_model, module, params = imported['hf_model'], imported['module'], imported['params']
  model_config = imported['model_config']
  inputs = hf_parity.source_batch(VOCAB, [150, 97], 150)  # (2, 150), row 1 padded
  ours = np.asarray(module.apply({'params': params}, {'inputs': inputs}, train=False))
  assert ours.shape == (2, 150, VOCAB)
  valid = inputs > 0  # padded positions attend to nothing in lmjax, to the real keys in HF
  diff = hf_parity.assert_logits_close(ours[valid], hf_mlm_logits(hf_model, inputs)[valid])
  print(f'import: max |logit difference| {diff:.3g}')

  out_dir = hf_parity.hf_dir_roundtrip(bert.table(model_config), params,
                                       bert.hf_config(model_config), str(tmp_path / 'export'))
  reloaded, info = transformers.BertForMaskedLM.from_pretrained(out_dir,
                                                                output_loading_info=True)
  assert not any(info.values()), info  # nothing missing, unexpected or mismatched
  again = hf_mlm_logits(reloaded.eval(), inputs)
  diff = hf_parity.assert_logits_close(again[valid], ours[valid])
  print(f'export: max |logit difference| {diff:.3g}')


def test_export_writes_every_tensor_back_and_zeros_only_the_key_bias(imported):
  tensors = imported['tensors']
  exported = mapping.to_hf(bert.table(imported['model_config']),
                           hf_parity.flat_numpy(imported['params']))
  tied = {'cls.predictions.decoder.weight', 'cls.predictions.decoder.bias'}
  assert set(exported) == set(tensors) - tied
  for name, value in tensors.items():
    if name.endswith('attention.self.key.bias'):
      np.testing.assert_array_equal(exported[name], np.zeros_like(value))
    elif name in exported:
      np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_a_file_with_the_tied_copies_imports_the_same(imported):
  tensors = dict(imported['tensors'])  # save_pretrained leaves the tied copies out
  tensors['cls.predictions.decoder.weight'] = tensors['bert.embeddings.word_embeddings.weight']
  tensors['cls.predictions.decoder.bias'] = tensors['cls.predictions.bias']
  flat = mapping.to_lmjax(bert.table(imported['model_config']), tensors, imported['shapes'])
  for path, value in hf_parity.flat_numpy(imported['params']).items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)


@pytest.mark.parametrize('edit,message', [
    (lambda t: t.update({'bert.encoder.layer.0.attention.extra': np.ones(3, np.float32)}),
     r'tensor bert\.encoder\.layer\.0\.attention\.extra \(3,\) matches no parameter of the '
     r'model'),
    (lambda t: t.pop('bert.embeddings.LayerNorm.bias'),
     r'tensor bert\.embeddings\.LayerNorm\.bias is missing \(model parameter '
     r'encoder/embed_ln/bias \(32,\)\)'),
    (lambda t: t.pop('bert.encoder.layer.1.attention.self.key.bias'),
     r'tensor bert\.encoder\.layer\.1\.attention\.self\.key\.bias is missing \(no model '
     r'parameter holds it'),
    (lambda t: t.update({'bert.embeddings.position_embeddings.weight':
                         np.ones((100, 32), np.float32)}),
     r'tensor bert\.embeddings\.position_embeddings\.weight has shape \(100, 32\) .*model '
     r'parameter encoder/pos/pos_embedding has \(160, 32\)'),
    (lambda t: t.update({'bert.encoder.layer.0.attention.self.key.bias':
                         np.ones(31, np.float32)}),
     r'tensor bert\.encoder\.layer\.0\.attention\.self\.key\.bias has shape \(31,\); expected '
     r'\(32,\)'),
    (lambda t: t.update({'cls.predictions.decoder.bias': t['cls.predictions.bias'] + 1}),
     r'tensor cls\.predictions\.decoder\.bias should be a tied copy of cls\.predictions\.bias '
     r'but differs'),
], ids=['unmatched', 'missing', 'missing_key_bias', 'shape', 'shape_key_bias', 'untied_alias'])
def test_a_bad_checkpoint_is_one_line_naming_the_tensor(imported, edit, message):
  tensors = dict(imported['tensors'])
  edit(tensors)
  with pytest.raises(HFError) as error:
    mapping.to_lmjax(bert.table(imported['model_config']), tensors, imported['shapes'], 'ckpt')
  assert '\n' not in str(error.value), str(error.value)
  assert re.match(rf'^ckpt: {message}', str(error.value)), str(error.value)


def test_families_pick_bert_by_model_type_and_by_model_config(imported):
  assert families.by_model_type({'model_type': 'bert'}, 'config.json') is bert
  assert families.by_model_config(imported['model_config']) is bert
  gpt2_fields = gpt2.model_config(transformers.GPT2Config().to_dict(), [])
  assert families.by_model_config(gpt2_fields) is gpt2
  with pytest.raises(HFError, match=r'BERT needs .*encoder'):
    bert.check_expressible(gpt2_fields)
  pre_ln = dict(imported['model_config'], pre_ln=True)
  with pytest.raises(HFError, match=r'^the model is not a BERT: config\.model\.pre_ln=True'):
    bert.check_expressible(pre_ln)


def test_workdir_import_stops_at_the_tokenizer_with_one_line(imported, tmp_path):
  hf_config = files.read_config(imported['hf_dir'])
  (tmp_path / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n')
  with pytest.raises(HFError) as error:
    convert.bridged_tokenizer(str(tmp_path), bert, hf_config)
  assert '\n' not in str(error.value)
  assert 'BERT checkpoint as an lmjax workdir is not supported yet' in str(error.value)


@pytest.mark.parametrize('field,value', [('hidden_act', 'relu'),
                                         ('position_embedding_type', 'relative_key')])
def test_an_inexpressible_config_is_one_line_naming_the_field(field, value):
  hf_config = transformers.BertConfig(**{field: value}).to_dict()
  with pytest.raises(HFError, match=rf'^config\.json: {field}={value!r}'):
    bert.model_config(hf_config, [])
