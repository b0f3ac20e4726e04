"""The LSTM sentence VAE: KL, IW bound, annealing, free bits, training, resume, decoding."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dates_vae
from configs import ptb_vae
from lmjax import models
from lmjax.config import configlib
from lmjax.tools import inference
from lmjax.objectives import vae as vae_objective
from lmjax.tools import vae_decode
from lmjax.train import checkpoint as ckpt_lib
from lmjax.train import loop
from lmjax.train import reporting


def tiny_config(steps=8):
  c = dates_vae.get_config('runlocal')
  c.train.num_train_steps = steps
  c.train.log_every = 2
  c.train.eval_every = steps
  c.train.checkpoint_every = 4
  c.train.async_checkpointing = False
  c.optimizer.learning_rate = 1e-2
  return c


def tiny_model_and_batch(seed=0):
  cfg = dict(tiny_config().model)
  model = models.build_model(cfg, target_vocab_size=20, vocab_size=20)
  rng = np.random.RandomState(seed)
  targets = rng.randint(3, 20, size=(4, 7)).astype(np.int32)
  targets[:, -1] = 1  # EOS
  targets[1, 4:] = 0  # a shorter sentence
  targets[1, 3] = 1
  batch = {'targets': jnp.asarray(targets)}
  params = model.init({'params': jax.random.key(seed), 'dropout': jax.random.key(1)}, batch,
                      train=False)['params']
  return model, jax.tree.map(lambda p: getattr(p, 'value', p), params,
                             is_leaf=lambda p: hasattr(p, 'value')), batch


def test_kl_equals_the_closed_form_in_numpy():
  rng = np.random.RandomState(0)
  mean, logvar = rng.randn(3, 5).astype(np.float32), rng.randn(3, 5).astype(np.float32)
  expected = 0.5 * (np.exp(logvar) + mean ** 2 - 1.0 - logvar)
  np.testing.assert_allclose(vae_objective.gaussian_kl(mean, logvar), expected, rtol=1e-6)
  # The eval sums' KL is the closed form of the model's own posterior.
  model, params, batch = tiny_model_and_batch()
  q = model.apply({'params': params}, batch['targets'], method='posterior')
  mu, lv = np.asarray(q['mean'], np.float64), np.asarray(q['logvar'], np.float64)
  closed = np.sum(0.5 * (np.exp(lv) + mu ** 2 - 1.0 - lv))
  _, sums, _ = vae_objective.ELBO(model).loss_and_metrics(params, batch, train=False)
  np.testing.assert_allclose(float(sums['kl']), closed, rtol=1e-5)
  np.testing.assert_allclose(float(sums['nll']), float(sums['rec']) + closed, rtol=1e-5)


def test_iw_log_weights_do_not_depend_on_the_padding():
  """The IW pass pads each length bucket only to its own length (lmjax.objectives.vae.IW_BUCKET)."""
  model, params, batch = tiny_model_and_batch()
  padded = {'targets': jnp.pad(batch['targets'], ((0, 0), (0, 9)))}  # (4, 16)
  short, long = (np.asarray(vae_objective.iw_log_weights(params, b, jax.random.key(3),
                                                         model=model, samples=8))
                 for b in (batch, padded))
  np.testing.assert_allclose(short, long, rtol=1e-5, atol=1e-4)


def test_iw_bound_is_below_the_elbo_and_tightens_with_more_samples():
  model, params, batch = tiny_model_and_batch()
  total = 256
  lw = np.asarray(vae_objective.iw_log_weights(params, batch, jax.random.key(3), model=model,
                                               samples=total))  # (B, 256)
  elbo_nll = -lw.mean(-1)  # MC estimate of rec + KL per sentence
  # The ELBO-based NLL from the analytic KL (and the MC reconstruction) agrees with it.
  _, sums, _ = vae_objective.ELBO(model).loss_and_metrics(params, batch, train=False)
  assert abs(elbo_nll.sum() - float(sums['nll'])) < 0.05 * float(sums['nll'])
  bounds = []
  for k in (1, 4, 16, 64, 256):  # E[IW_k] estimated on 256 / k disjoint groups of draws
    groups = lw.reshape(lw.shape[0], total // k, k)
    bounds.append(np.mean([vae_objective.iw_nll(groups[:, g]) for g in range(total // k)], 0))
  bounds = np.asarray(bounds)  # (5, B)
  assert np.all(bounds[-1] <= elbo_nll + 1e-6)
  assert np.all(np.diff(bounds.sum(-1)) <= 1e-4), bounds.sum(-1)


def test_annealing_schedules_equal_hand_computed_values():
  cfg = models.build_model(dict(tiny_config().model), target_vocab_size=9).config
  linear = cfg.__class__(**{**cfg.__dict__, 'kl_schedule': 'linear', 'kl_warmup_steps': 10})
  cyclic = cfg.__class__(**{**cfg.__dict__, 'kl_schedule': 'cyclical', 'kl_cycle_steps': 10,
                            'kl_cycle_ratio': 0.5})
  const = cfg.__class__(**{**cfg.__dict__, 'kl_schedule': 'constant'})
  no_warmup = cfg.__class__(**{**linear.__dict__, 'kl_warmup_steps': 0})
  steps = [0, 2, 5, 7, 10, 12, 25]
  beta = lambda c: [round(float(vae_objective.kl_weight(c, s)), 6) for s in steps]
  assert beta(linear) == [0.0, 0.2, 0.5, 0.7, 1.0, 1.0, 1.0]
  assert beta(cyclic) == [0.0, 0.4, 1.0, 1.0, 0.0, 0.4, 1.0]
  assert beta(const) == beta(no_warmup) == [1.0] * 7


def test_free_bits_clamp_the_batch_mean_kl_per_unit():
  kl = jnp.asarray([[0.0, 0.4, 1.5], [0.2, 0.8, 0.5], [9.0, 9.0, 9.0]])
  rows = jnp.asarray([1.0, 1.0, 0.0])  # the third row is padding
  # Unit means over real rows: 0.1, 0.6, 1.0 → max(0.5, ·) = 0.5, 0.6, 1.0; times 2 rows.
  np.testing.assert_allclose(vae_objective.free_bits_kl(kl, rows, 0.5), 2 * 2.1, rtol=1e-6)
  np.testing.assert_allclose(vae_objective.free_bits_kl(kl, rows, 0.0), 3.4, rtol=1e-6)
  grad = jax.grad(lambda k: vae_objective.free_bits_kl(k, rows, 0.5))(kl)
  np.testing.assert_allclose(grad, [[0, 1, 1], [0, 1, 1], [0, 0, 0]])  # unit 0 is free


def test_active_units_count_variance_above_001():
  mu = np.asarray([[0.0, 1.0, 0.05], [0.0, -1.0, -0.05], [0.0, 1.0, 0.05], [0.0, -1.0, -0.05]])
  assert vae_objective.active_units(mu.sum(0), (mu ** 2).sum(0), 4) == 1


def test_configs_validate_and_build():
  for c in (ptb_vae.get_config('../shared/data'), ptb_vae.get_config('../shared/data,runlocal'),
            dates_vae.get_config(), dates_vae.get_config('runlocal')):
    configlib.validate(c)
    assert c.eval.iw_samples > 0
    models.build_model(c.model, target_vocab_size=11, vocab_size=11)
  assert ptb_vae.get_config('d').task.source.lm_mode == 'line'
  lm = ptb_vae.get_config('../shared/data,lm')  # Bowman's baseline: the decoder alone
  configlib.validate(lm)
  assert lm.model.kind == 'decoder' and (lm.model.emb_dim, lm.model.hidden_dim) == (353, 191)
  assert lm.task.batching == ptb_vae.get_config('../shared/data').task.batching
  with pytest.raises(ValueError, match='kl_schedule'):
    models.build_model(dict(tiny_config().model, kl_schedule='sigmoid'),
                       target_vocab_size=9).init(jax.random.key(0), {'targets': jnp.ones((1, 3), jnp.int32)},
                                                 train=False)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 30-step run of the tiny dates VAE through the shared trainer."""
  workdir = str(tmp_path_factory.mktemp('vae') / 'run')
  c = tiny_config(steps=30)
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 5, 15, 15
  metrics = loop.train_and_evaluate(c, workdir)
  return workdir, metrics


def test_trains_through_the_shared_trainer_and_reports_vae_metrics(trained):
  workdir, metrics = trained
  records = reporting.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train = [r for r in records if r['split'] == 'train']
  assert train[-1]['loss'] < train[0]['loss'] - 0.2, [r['loss'] for r in train]
  assert {'rec', 'kl', 'elbo', 'kl_weight'} <= set(train[-1])
  names = vae_objective.VAE_METRICS + vae_objective.IW_METRICS + ('nll', 'perplexity')
  assert set(names) <= set(metrics)
  assert metrics['iw_nll'] <= metrics['rec'] + metrics['kl'] + 1e-3
  evals = [r for r in records if r['split'] == 'eval']
  assert 'iw_nll' not in evals[0] and 'iw_nll' in evals[-1]  # IW at the last eval only
  assert os.path.exists(os.path.join(workdir, 'curves.png'))


def test_resume_equals_uninterrupted(tmp_path):
  config = tiny_config()
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  loop.train_and_evaluate(config, straight)
  loop.train_and_evaluate(config, resumed, stop_after_steps=4)
  assert ckpt_lib.load_params(resumed)[1] == 4
  loop.train_and_evaluate(config, resumed)
  for a, b in zip(jax.tree.leaves(ckpt_lib.load_params(straight)[0]),
                  jax.tree.leaves(ckpt_lib.load_params(resumed)[0])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  hist = lambda d: [(r['step'], r['split'], r.get('loss'), r.get('kl'), r.get('kl_weight'))
                    for r in reporting.read_jsonl(os.path.join(d, 'metrics.jsonl'))]
  assert hist(straight) == hist(resumed)


def _lines(path):
  with open(path) as f:
    return f.read().split('\n')[:-1]


def test_decode_prior_samples_reconstructions_and_interpolation(trained, tmp_path):
  workdir, _ = trained
  src = tmp_path / 'in.txt'
  src.write_text('third of may 1990\n\ntwenty first of june 2004\n'
                 'may 3 1990\n2004-06-21\n')
  out = str(tmp_path / 'out.txt')
  assert vae_decode.decode_file(workdir, '-', out, num_samples=3) == 3
  assert len(_lines(out)) == 3
  assert vae_decode.decode_file(workdir, str(src), out) == 5  # one per line, empty stays empty
  assert _lines(out)[1] == ''
  assert vae_decode.decode_file(workdir, str(src), out, interpolate_steps=4) == 8  # 2 pairs × 4
  assert len(_lines(out)) == 8
  with pytest.raises(inference.ToolError, match='beam_size'):
    vae_decode.decode_file(workdir, str(src), out, inference.DecodeOptions(beam_size=2))


def test_evaluate_iw_samples_flag_sets_the_bound(trained, tmp_path, capsys):
  from lmjax.tools import workdir_tools  # pylint: disable=g-import-not-at-top
  from lmjax.tools.workdir import ToolError  # pylint: disable=g-import-not-at-top
  workdir, _ = trained
  report = workdir_tools.evaluate_workdir(workdir, iw_samples=4, output=str(tmp_path / 'a.json'))
  m = report['metrics']
  assert m['iw_nll'] <= m['rec'] + m['kl'] + 1e-3 and m['iw_perplexity'] > 1
  bar = capsys.readouterr().err  # the IW pass's progress bar counts every eval sentence
  n = report['num_examples']
  assert 'IW bound (K=4): 100%' in bar and f'{n}/{n}' in bar
  off = workdir_tools.evaluate_workdir(workdir, iw_samples=0, output=str(tmp_path / 'b.json'))
  assert 'iw_nll' not in off['metrics']
  with pytest.raises(ToolError, match='--iw_samples=-1'):
    workdir_tools.evaluate_workdir(workdir, iw_samples=-1)
