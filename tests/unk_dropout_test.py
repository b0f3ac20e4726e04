"""Frequency and entity word dropout for taggers (config.task.unk_alpha, entity_unk_rate).

The end-to-end check is a tagging task whose eval entities are all words training never
saw (<unk>), as in WNUT-17: only a tagger that met <unk> inside entities in training
finds them.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import configlib
from lmjax.data import labeled_tasks
from lmjax.data import tasks
from lmjax.data import tokenizers
from lmjax.models import heads
from lmjax.train import loop
from tests.char_features_test import write_conll

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lower(cfg, word):
  return word.lower() if cfg.get('tokenizer', {}).get('lowercase') else word


def test_unk_permille_follows_counts_and_entity_tags():
  sentences = [(['a', 'b', 'Zed'], ['O', 'O', 'B-person']), (['a', 'a', 'c'], ['O', 'O', 'O'])]
  cfg = {'unk_alpha': 1.0, 'entity_unk_rate': 0.0}
  got = labeled_tasks.unk_permille(cfg, sentences, lower)
  # counts: a 3, b 1, Zed 1, c 1 → α / (α + c) = 1/4, 1/2, 1/2, 1/2.
  np.testing.assert_array_equal(got[0], [250, 500, 500])
  np.testing.assert_array_equal(got[1], [250, 250, 500])
  cfg = {'unk_alpha': 1.0, 'entity_unk_rate': 0.6}
  got = labeled_tasks.unk_permille(cfg, sentences, lower)
  np.testing.assert_array_equal(got[0], [250, 500, 800])  # 1 − (1 − 0.5)(1 − 0.6)
  cfg = {'unk_alpha': 0.0, 'entity_unk_rate': 0.6}
  np.testing.assert_array_equal(labeled_tasks.unk_permille(cfg, sentences, lower)[0], [0, 0, 600])
  assert labeled_tasks.unk_permille({'unk_alpha': 0.0, 'entity_unk_rate': 0.0}, sentences,
                                    lower) is None
  with pytest.raises(ValueError, match="entity_unk_rate=0.5.*outside tag 'O'"):
    labeled_tasks.unk_permille({'entity_unk_rate': 0.5}, [(['a'], ['B-x'])], lower)


def test_per_token_rates_combine_with_word_dropout():
  model = nn.Dense(1)  # any module: replace_by_unk only draws from its rng stream
  inputs = np.where(np.arange(400)[None] < 300, 7, 0).repeat(50, 0).astype(np.int32)  # (50, 400)
  permille = np.full(inputs.shape, 300, np.int32)
  permille[:, :100] = 1000  # always dropped
  run = lambda rate, train: np.asarray(nn.apply(
      lambda m: heads.replace_by_unk(m, jnp.asarray(inputs), rate, train, jnp.asarray(permille)),
      model)({}, rngs={'dropout': jax.random.key(1)}))
  out = run(0.5, True)
  assert (out[:, :100] == heads.UNK_ID).all()
  # 1 − (1 − 0.5)(1 − 0.3) = 0.65 of the other real words; padding stays 0.
  assert abs((out[:, 100:300] == heads.UNK_ID).mean() - 0.65) < 0.01
  assert not out[:, 300:].any()
  np.testing.assert_array_equal(run(0.5, False), inputs)  # eval: nothing replaced


def sentences(rng, n, names):
  out = []
  for _ in range(n):
    words = [f'w{i}' for i in rng.integers(0, 20, rng.integers(3, 6))]
    words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(names)))
    out.append(words)
  return out


def tag_config(root, **task):
  config = configlib.load_config_file(os.path.join(REPO, 'configs/wnut17_bilstm_crf.py')
                                      + f':{root},runlocal')
  config.model.char_dim, config.task.word_chars = 0, 0  # words only
  config.model.word_dropout, config.model.dropout_rate = 0.0, 0.0
  config.task.source.max_eval_examples = 0
  config.optimizer.learning_rate = 2e-2
  config.train.num_train_steps = config.train.eval_every = config.train.checkpoint_every = 40
  config.train.async_checkpointing = False
  config.eval.num_samples = 0
  config.update_from_flattened_dict({f'task.{k}': v for k, v in task.items()})
  return config


@pytest.fixture(scope='module')
def novel_names(tmp_path_factory):
  """Training names come from 4 words; every eval name is a word training never saw."""
  root = str(tmp_path_factory.mktemp('novel'))
  rng = np.random.default_rng(0)
  is_name = lambda w: w.startswith('name')
  write_conll(f'{root}/wnut17/wnut17train.conll', sentences(rng, 300, [f'name{i}' for i in range(4)]),
              is_name)
  write_conll(f'{root}/wnut17/emerging.dev.conll', sentences(rng, 60, [f'namenew{i}' for i in range(60)]),
              is_name)
  return root


def test_entity_word_dropout_teaches_the_tagger_that_unseen_words_are_names(novel_names, tmp_path):
  config = tag_config(novel_names, entity_unk_rate=0.5)
  task = tasks.build_task(config.task, None)
  names = [ex for ex in task.train_examples if (ex['unk_permille'] == 500).any()]
  assert len(names) == len(task.train_examples)  # one name per sentence, 0.5 each
  assert all((ex['unk_permille'][ex['tags'] == 1] == 0).all() for ex in task.train_examples)
  assert all((ex['inputs'][ex['tags'] > 1] == tokenizers.UNK_ID).all() for ex in task.eval_examples)
  with_rate = loop.train_and_evaluate(config, str(tmp_path / 'with'))
  without = loop.train_and_evaluate(tag_config(novel_names), str(tmp_path / 'without'))
  assert with_rate['entity_f1'] > 95.0, with_rate  # 100 measured
  # Without it <unk> was never met in training: context alone finds fewer (F1 78 measured).
  assert without['entity_recall'] < 90.0 and without['entity_f1'] < with_rate['entity_f1'] - 10


def test_unk_options_are_validated(novel_names):
  config = tag_config(novel_names, entity_unk_rate=1.0, unk_alpha=-1.0)
  with pytest.raises(configlib.ConfigError) as e:
    configlib.validate(config)
  assert 'task.entity_unk_rate' in str(e.value) and 'task.unk_alpha' in str(e.value)
  config = tag_config(novel_names, unk_alpha=1.0)
  config.model.family = 'transformer'
  with pytest.raises(configlib.ConfigError, match='model.family.*unk_alpha'):
    configlib.validate(config)
