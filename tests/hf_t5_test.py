"""T5 v1.0 (tied, ReLU) and v1.1 (gated GELU, untied lm_head) from Hugging Face format:
logits within 1e-4 of the PyTorch model on padded sources longer than 128 tokens (T5's
relative distances reach the max-distance bucket), the same 20-token greedy decode, and
an export that transformers loads back to the same logits."""

import numpy as np
import pytest

from tests import hf_parity
from lmjax.decoding import predict
from lmjax.hf import files
from lmjax.hf import mapping
from lmjax.hf import t5

torch, transformers = hf_parity.torch, hf_parity.transformers
VOCAB = 96
VARIANTS = {
    'v1.0_tied': dict(feed_forward_proj='relu', tie_word_embeddings=True),
    'v1.1_gated_untied': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False),
}


def hf_t5(variant):
  config = transformers.T5Config(
      vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=2,
      num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
      dropout_rate=0.0, decoder_start_token_id=0, initializer_factor=0.3, **VARIANTS[variant])
  return hf_parity.perturbed(transformers.T5ForConditionalGeneration(config))


def import_t5(hf_dir, batch):
  hf_config, tensors = files.read_config(hf_dir), files.read_tensors(hf_dir)
  model_config = t5.model_config(hf_config, tensors)
  vocab = model_config.pop('vocab_size')
  model_config['dtype'] = 'float32'
  module, shapes = hf_parity.expected_shapes(model_config, dict(vocab_size=vocab,
                                                               target_vocab_size=vocab), batch)
  params = hf_parity.nested(mapping.to_lmjax(t5.table(model_config), tensors, shapes, hf_dir))
  return module, params, dict(model_config, vocab_size=vocab)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_imported_t5_matches_transformers_and_exports_back(variant, tmp_path):
  hf_model = hf_t5(variant)
  hf_dir = hf_parity.save(hf_model, str(tmp_path / 'hf'))
  inputs = hf_parity.source_batch(VOCAB, [150, 97], 150)  # (2, 150), row 1 padded
  targets = hf_parity.source_batch(VOCAB, [140, 140], 140, seed=1)
  batch = {'inputs': inputs, 'targets': targets}
  module, params, model_config = import_t5(hf_dir, batch)
  assert model_config['tie_output'] == (variant == 'v1.0_tied')

  ours = module.apply({'params': params}, batch, train=False)  # (2, 140, V)
  theirs = hf_parity.seq2seq_logits(hf_model, inputs, targets)
  hf_parity.assert_logits_close(ours, theirs)

  got = np.asarray(predict.greedy_decode(module, params, inputs, max_length=20))
  with torch.no_grad():
    want = hf_model.generate(input_ids=torch.tensor(inputs, dtype=torch.long),
                             attention_mask=torch.tensor(inputs > 0, dtype=torch.long),
                             max_new_tokens=20, min_new_tokens=20, do_sample=False,
                             num_beams=1).numpy()[:, 1:]  # without the decoder start
  np.testing.assert_array_equal(got, want)

  out_dir = hf_parity.hf_dir_roundtrip(t5.table(model_config), params,
                                       t5.hf_config(model_config), str(tmp_path / 'export'))
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(out_dir).eval()
  hf_parity.assert_logits_close(hf_parity.seq2seq_logits(reloaded, inputs, targets), ours)
