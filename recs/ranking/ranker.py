"""The learned ranker: LightGBM LambdaRank over the candidates' features, saved as LightGBM text.

Text models are plain data (no pickle) and load without running code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recs.errors import ArtifactError, ConfigError, NotFittedError
from recs.ranking.config import RankerConfig


class LearnedRanker:
    """Scores candidates; higher is better. `fit` groups rows by query (one group per user)."""

    def __init__(self, feature_names: tuple[str, ...], config: RankerConfig | None = None) -> None:
        self.feature_names = tuple(feature_names)
        self.config = config or RankerConfig()
        self.booster = None
        self.best_iteration = 0
        self.metrics: dict[str, float] = {}

    def fit(self, features: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray) -> LearnedRanker:
        import lightgbm as lgb

        if features.shape[1] != len(self.feature_names):
            raise ValueError(f"{features.shape[1]} feature columns for {len(self.feature_names)} names")
        unknown = [f for f in self.config.ignored_features if f not in self.feature_names]
        if unknown:
            raise ConfigError(f"ranker.ignored_features: unknown feature(s) {', '.join(unknown)} "
                              f"(known: {', '.join(self.feature_names)})")
        if self.config.ignored_features:
            features = features.copy()
            features[:, [self.feature_names.index(f) for f in self.config.ignored_features]] = 0.0
        groups = np.asarray(group_sizes, dtype=np.int64)
        rng = np.random.default_rng(self.config.seed)
        n_valid = int(len(groups) * self.config.valid_share)
        valid_groups = np.zeros(len(groups), dtype=bool)
        if n_valid >= 5:
            valid_groups[rng.choice(len(groups), n_valid, replace=False)] = True
        row_group = np.repeat(np.arange(len(groups)), groups)
        train_rows, valid_rows = ~valid_groups[row_group], valid_groups[row_group]
        ranking = self.config.objective == "lambdarank"
        params = {
            "objective": self.config.objective,
            "metric": "ndcg" if ranking else "auc",
            **({"eval_at": [10]} if ranking else {}),
            "num_leaves": self.config.num_leaves,
            "learning_rate": self.config.learning_rate,
            "min_data_in_leaf": max(1, min(self.config.min_data_in_leaf, int(train_rows.sum()) // 20)),
            "feature_fraction": self.config.feature_fraction,
            "seed": self.config.seed,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }
        train = lgb.Dataset(features[train_rows], labels[train_rows], group=groups[~valid_groups],
                            feature_name=list(self.feature_names), free_raw_data=False)
        callbacks = []
        valid_sets = []
        if valid_groups.any():
            valid = lgb.Dataset(features[valid_rows], labels[valid_rows], group=groups[valid_groups], reference=train)
            valid_sets = [valid]
            callbacks.append(lgb.early_stopping(self.config.early_stopping_rounds, verbose=False))
        self.booster = lgb.train(params, train, num_boost_round=self.config.n_estimators, valid_sets=valid_sets, callbacks=callbacks)
        self.best_iteration = int(self.booster.best_iteration or self.booster.current_iteration())
        if valid_sets:
            key = "ndcg@10" if ranking else "auc"
            self.metrics = {f"valid_{key}": float(self.booster.best_score["valid_0"][key])}
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.booster is None:
            raise NotFittedError("the ranker is not trained: run `recs train-ranker`")
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        scores = self.booster.predict(features, num_iteration=self.best_iteration, raw_score=True)
        return np.nan_to_num(np.asarray(scores, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    def feature_importance(self) -> dict[str, float]:
        if self.booster is None:
            return {}
        gains = self.booster.feature_importance(importance_type="gain")
        return dict(zip(self.feature_names, (float(g) for g in gains), strict=True))

    def save(self, folder: Path, prefix: str = "ranker") -> list[str]:
        if self.booster is None:
            raise NotFittedError("the ranker is not trained")
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / f"{prefix}.txt"), num_iteration=self.best_iteration)
        meta = {"feature_names": list(self.feature_names), "config": self.config.model_dump(),
                "best_iteration": self.best_iteration, "metrics": self.metrics}
        (folder / f"{prefix}.json").write_text(json.dumps(meta, indent=1))
        return [f"{prefix}.txt", f"{prefix}.json"]

    @classmethod
    def load(cls, folder: Path, prefix: str = "ranker") -> LearnedRanker:
        import lightgbm as lgb

        try:
            meta = json.loads((folder / f"{prefix}.json").read_text())
            booster = lgb.Booster(model_file=str(folder / f"{prefix}.txt"))
        except (OSError, ValueError, lgb.basic.LightGBMError) as err:
            raise ArtifactError(f"{folder}/{prefix}.txt: cannot load ranker: {err}") from None
        ranker = cls(tuple(meta["feature_names"]), RankerConfig.parse_dict(meta["config"]))
        ranker.booster = booster
        ranker.best_iteration = 0  # the saved model holds exactly the best iterations
        ranker.metrics = meta.get("metrics", {})
        return ranker
