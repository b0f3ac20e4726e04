"""GPT-2 (GPT2LMHeadModel) from Hugging Face format: logits within 1e-4 of the PyTorch model
on a padded batch longer than 128 tokens, the same 20-token greedy continuation of prompts
(GPT-2 ids ↔ lmjax ids through `gpt2.lmjax_ids` / `gpt2.hf_ids`), an export that
transformers loads back to the same logits, and one error line per bad tensor."""

import re

import jax
import numpy as np
import pytest

from tests import hf_parity
from lmjax.decoding import predict
from lmjax.hf import families
from lmjax.hf import files
from lmjax.hf import gpt2
from lmjax.hf import mapping
from lmjax.hf import t5
from lmjax.hf.files import HFError

torch, transformers = hf_parity.torch, hf_parity.transformers
HF_VOCAB = 96  # <|endoftext|> = 95
VOCAB = HF_VOCAB + 2  # lmjax's rows
END = HF_VOCAB - 1
WIDTH = 32


def hf_gpt2():
  config = transformers.GPT2Config(
      vocab_size=HF_VOCAB, n_embd=WIDTH, n_head=4, n_layer=2, n_positions=160, resid_pdrop=0.0,
      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=END, eos_token_id=END)
  torch.manual_seed(0)
  return hf_parity.perturbed(transformers.GPT2LMHeadModel(config))


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """The HF model, its tensors as read back, and the lmjax module, parameter shapes,
  parameters and config.model fields (+ 'vocab_size') it converts to."""
  hf_model = hf_gpt2()
  hf_dir = hf_parity.save(hf_model, str(tmp_path_factory.mktemp('hf')))
  hf_config, tensors = files.read_config(hf_dir), files.read_tensors(hf_dir)
  model_config = gpt2.model_config(hf_config, tensors)
  vocab = model_config.pop('vocab_size')
  model_config['dtype'] = 'float32'
  batch = {'targets': np.ones((1, 8), np.int32)}
  module, shapes = hf_parity.expected_shapes(model_config, dict(vocab_size=vocab,
                                                               target_vocab_size=vocab), batch)
  flat = mapping.to_lmjax(gpt2.table(model_config), tensors, shapes, hf_dir)
  return dict(hf_model=hf_model, tensors=tensors, module=module, shapes=shapes,
              params=hf_parity.nested(flat), model_config=dict(model_config, vocab_size=vocab))


def hf_lm_logits(model, inputs, mask):
  """A transformers causal LM's logits (B, T, V) for GPT-2 ids `inputs` (B, T)."""
  with torch.no_grad():
    return model(input_ids=torch.tensor(inputs, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).logits.numpy()


def test_imported_gpt2_matches_transformers_and_exports_back(imported, tmp_path):
  hf_model, module, params = imported['hf_model'], imported['module'], imported['params']
  model_config = imported['model_config']
  assert model_config['vocab_size'] == VOCAB
  targets = hf_parity.source_batch(VOCAB, [150, 97], 150)  # (2, 150) lmjax ids, row 1 padded
  ours = np.asarray(module.apply({'params': params}, {'targets': targets}, train=False))
  assert ours.shape == (2, 150, VOCAB)
  for copy in gpt2.NEVER_EMITTED:  # tied rows: BOS and unknown score as <|endoftext|>
    np.testing.assert_array_equal(ours[..., copy], ours[..., gpt2.EOS_ID])
  # GPT-2 reads <|endoftext|> where lmjax reads BOS (0) at position 0, then the same tokens.
  inputs = gpt2.hf_ids(np.pad(targets, ((0, 0), (1, 0)))[:, :-1], HF_VOCAB)  # (2, 150)
  valid = targets > 0
  theirs = hf_lm_logits(hf_model, inputs, valid)
  diff = hf_parity.assert_logits_close(gpt2.hf_logits(ours)[valid], theirs[valid])
  print(f'import: max |logit difference| {diff:.3g}')

  # Greedy continuations of right-padded prompts (lengths 12 and 7) by 20 tokens.
  rng = np.random.default_rng(3)
  prompts = [rng.integers(0, END, size=n) for n in (12, 7)]  # GPT-2 ids, no <|endoftext|>
  prefix = np.zeros((2, 12), np.int32)
  for b, p in enumerate(prompts):
    prefix[b, :len(p)] = gpt2.lmjax_ids(p, HF_VOCAB)
  got = np.asarray(predict.sample_decode(
      module, params, prefix, jax.random.key(0), 12 + 20, temperature=0.0, top_k=0, top_p=1.0,
      prefix=prefix, banned_ids=gpt2.NEVER_EMITTED))  # (2, 32) prompt then continuation
  for b, p in enumerate(prompts):
    continuation = got[b, len(p):len(p) + 20]
    assert not np.any(continuation == gpt2.EOS_ID), 'the model chose EOS: pick another seed'
    with torch.no_grad():
      want = hf_model.generate(
          input_ids=torch.tensor([[END, *p]], dtype=torch.long),
          attention_mask=torch.ones((1, len(p) + 1), dtype=torch.long), do_sample=False,
          num_beams=1, max_new_tokens=20, min_new_tokens=20, pad_token_id=END).numpy()
    np.testing.assert_array_equal(gpt2.hf_ids(continuation, HF_VOCAB), want[0, len(p) + 1:])

  out_dir = hf_parity.hf_dir_roundtrip(gpt2.table(model_config), params,
                                       gpt2.hf_config(model_config), str(tmp_path / 'export'))
  reloaded, info = transformers.GPT2LMHeadModel.from_pretrained(out_dir,
                                                                output_loading_info=True)
  assert not any(info.values()), info  # nothing missing, unexpected or mismatched
  again = hf_lm_logits(reloaded.eval(), inputs, valid)
  diff = hf_parity.assert_logits_close(again[valid], gpt2.hf_logits(ours)[valid])
  print(f'export: max |logit difference| {diff:.3g}')


def test_unprompted_greedy_decode_matches_transformers(imported):
  got = np.asarray(predict.greedy_decode(imported['module'], imported['params'],
                                         np.zeros((1, 1), np.int32), 20,
                                         banned_ids=gpt2.NEVER_EMITTED))  # (1, 20)
  assert not np.any(got == gpt2.EOS_ID), 'the model chose EOS: pick another seed'
  with torch.no_grad():
    want = imported['hf_model'].generate(
        input_ids=torch.tensor([[END]], dtype=torch.long),
        attention_mask=torch.ones((1, 1), dtype=torch.long), do_sample=False, num_beams=1,
        max_new_tokens=20, min_new_tokens=20, pad_token_id=END).numpy()
  np.testing.assert_array_equal(gpt2.hf_ids(got, HF_VOCAB), want[:, 1:])


def test_export_writes_every_tensor_back_and_zeros_only_the_key_bias(imported):
  tensors = imported['tensors']
  flat = hf_parity.flat_numpy(imported['params'])
  exported = mapping.to_hf(gpt2.table(imported['model_config']), flat)
  assert set(exported) == set(tensors) - {'lm_head.weight'}
  for name, value in tensors.items():
    if name.endswith('attn.c_attn.bias'):
      q, k, v = np.split(exported[name], 3)
      np.testing.assert_array_equal(np.concatenate([q, v]), np.concatenate(
          [value[:WIDTH], value[2 * WIDTH:]]))
      np.testing.assert_array_equal(k, 0)  # softmax cancels a key bias; lmjax has none
    elif name in exported:
      np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_export_refuses_different_bos_and_eos_rows(imported):
  flat = hf_parity.flat_numpy(imported['params'])
  flat['embed/embedding'] = flat['embed/embedding'].copy()
  flat['embed/embedding'][0] += 0.5
  with pytest.raises(HFError, match=r'^embed/embedding rows 0 \(BOS\) and 1 \(EOS\) differ'):
    mapping.to_hf(gpt2.table(imported['model_config']), flat)


@pytest.mark.parametrize('edit,message', [
    (lambda t: t.update({'transformer.h.0.attn.extra': np.ones(3, np.float32)}),
     r'tensor transformer\.h\.0\.attn\.extra \(3,\) matches no parameter of the model'),
    (lambda t: t.pop('transformer.ln_f.bias'),
     r'tensor transformer\.ln_f\.bias is missing \(model parameter decoder/final_ln/bias '
     r'\(32,\)\)'),
    (lambda t: t.pop('transformer.h.1.attn.c_attn.weight'),
     r'tensor transformer\.h\.1\.attn\.c_attn\.weight is missing \(model parameters '
     r'decoder/layer_1/self_attention/query/kernel \(32, 4, 8\), .*/key/kernel .*/value/kernel'),
    (lambda t: t.update({'transformer.wpe.weight': np.ones((100, 32), np.float32)}),
     r'tensor transformer\.wpe\.weight has shape \(100, 32\) .*model parameter '
     r'decoder/pos/pos_embedding has \(160, 32\)'),
    (lambda t: t.update({'transformer.h.0.attn.c_attn.weight': np.ones((32, 99), np.float32)}),
     r'tensor transformer\.h\.0\.attn\.c_attn\.weight has shape \(32, 99\), which does not fit'),
    (lambda t: t.update({'transformer.h.0.attn.c_attn.bias': np.ones(95, np.float32)}),
     r'tensor transformer\.h\.0\.attn\.c_attn\.bias has shape \(95,\), which does not fit'),
    (lambda t: t.update({'lm_head.weight': t['transformer.wte.weight'] + 1}),
     r'tensor lm_head\.weight should be a tied copy of transformer\.wte\.weight but differs'),
], ids=['unmatched', 'missing', 'missing_fused', 'shape', 'shape_fused', 'shape_fused_parts',
        'untied_alias'])
def test_a_bad_checkpoint_is_one_line_naming_the_tensor(imported, edit, message):
  tensors = dict(imported['tensors'])
  edit(tensors)
  with pytest.raises(HFError) as error:
    mapping.to_lmjax(gpt2.table(imported['model_config']), tensors, imported['shapes'], 'ckpt')
  assert '\n' not in str(error.value), str(error.value)
  assert re.match(rf'^ckpt: {message}', str(error.value)), str(error.value)


def test_families_pick_gpt2_by_model_type_and_by_model_config(imported):
  assert families.by_model_type({'model_type': 'gpt2'}, 'config.json') is gpt2
  assert families.by_model_config(imported['model_config']) is gpt2
  t5_fields = t5.model_config(transformers.T5Config().to_dict(), [])
  assert families.by_model_config(t5_fields) is t5
  with pytest.raises(HFError, match=r'GPT-2 needs .*decoder'):
    gpt2.check_expressible(t5_fields)
