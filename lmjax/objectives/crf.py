"""Linear-chain CRF negative log-likelihood for taggers with `config.model.use_crf`.

The loss is the mean NLL per sentence: `loss` and `nll` hold Σ sentence NLL and
`loss_weight` (= `sentences`) the number of sentences; label smoothing does not apply.
`correct`/`weight` give the argmax-emission token accuracy. One forward pass gives both
the emissions and the NLL (`crf_nll`). Predictions are Viterbi paths (`crf_decode`);
an ensemble runs Viterbi on its members' mean emissions and mean transition tables.
"""

from typing import Any, Dict, Sequence

import jax.numpy as jnp

from lmjax.models import crf as crf_lib
from lmjax.objectives import base


class CRFNegLogLikelihood(base.Objective):
  """Σ sentence NLL of `batch['tags']` under the model's emissions and CRF tables."""

  loss_metrics = ('loss', 'accuracy', 'nll_per_token')

  def loss_and_metrics(self, params, batch, args: Sequence[Any] = (), *, train: bool,
                       rngs=None, step=0, carry=None):
    del args, step
    emissions, nll = self.model.apply({'params': params}, base.model_inputs(batch),
                                      train=train, rngs=rngs, method='crf_nll')  # (B,S,C), (B,)
    tags = batch['tags']  # (B, S)
    weights = (tags > 0).astype(jnp.float32)
    sentences = (jnp.sum(weights, axis=-1) > 0).astype(jnp.float32)  # (B,)
    total = jnp.sum(nll * sentences)
    n = jnp.sum(sentences)
    sums = {'loss': total, 'nll': total, 'loss_weight': n, 'sentences': n,
            'correct': jnp.sum(base.argmax_correct(emissions, tags) * weights),
            'weight': jnp.sum(weights)}
    return total, sums, carry

  def means(self, sums: Dict[str, Any]) -> Dict[str, float]:
    """A sentence-level loss: the per-token NLL (a per-token perplexity would mislead)."""
    return {'nll_per_token': float(sums['nll']) / max(float(sums['weight']), 1.0)}

  def scores(self, params, batch):
    variables = {'params': params}
    emissions = self.model.apply(variables, base.model_inputs(batch), train=False)
    tables = self.model.apply(variables, method=lambda m: m.crf())
    return tuple(x.astype(jnp.float32) for x in (emissions,) + tuple(tables))

  def predict_from_scores(self, scores, batch, score_bias=None) -> jnp.ndarray:
    emissions, transitions, start, end = scores
    if score_bias is not None:
      emissions = emissions + score_bias
    return crf_lib.viterbi(emissions, batch['inputs'] > 0, transitions, start, end)

  def predict_labels(self, params, batch, score_bias=None) -> jnp.ndarray:
    return self.model.apply({'params': params}, base.model_inputs(batch), score_bias,
                            method='crf_decode')
