"""TGC-LSTM, the traffic graph-convolutional LSTM of Cui et al. (IEEE T-ITS, 2019), as a
forecaster.

The network and its forms are :mod:`models.nn.tgclstm_net`: by default (``form="hybrid"``)
the network-wide LSTM of :mod:`models.forecasters.rnn` plus the paper's graph path (K-hop,
free-flow-reachability-masked graph convolution and neighbour cell term) entering through
a head that starts at zero, so the untrained model is the LSTM and training decides how
much graph to use; ``form="paper"`` is the paper's exact form (hidden size N, dense
gates), ``form="shared"`` the graph path alone. ``Ã^k ⊙ FFR`` comes from the panel's road
graph (:meth:`TGCLSTM.hop_lists`); the bundle keeps the edge lists, so it loads without
the graph. λ1 and λ2 (``lambda_gc``, ``lambda_nb``) are the paper's regularisers;
``ensemble`` averages independently trained networks. The measurements behind the
defaults are in ``docs/decisions.md`` (TGC-LSTM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from torch import Tensor, nn

from models.bundle import read_model_bundle
from models.forecasters.base import restore_forecaster
from models.forecasters.network import NetworkForecaster
from models.forecasters.rnn import RecurrentForecaster
from models.forecasters.windows import check_2d
from models.nn.devices import seeded
from models.nn.inputs import SATURDAY_SUNDAY, InputSpec, Scaler, weekend_inputs
from models.nn.subgraphs import Partition, partition
from models.nn.tgclstm_net import FORMS, Form, SkipKind, TGCLSTMEnsemble, TGCLSTMNet
from models.nn.training import TrainConfig, TrainHistory, fit_network
from models.nn.weights import load_module_tensors
from models.panel import SensorPanel

__all__ = ["TGCLSTM", "TGCLSTMConfig", "TGCLSTMEnsemble", "TGCLSTMNet"]


@dataclass(frozen=True)
class TGCLSTMConfig:
    """Hyper-parameters of :class:`TGCLSTM` (all recorded in the bundle).

    Attributes
    ----------
    window, horizon : input steps and forecast steps.
    level : central level of the split-conformal intervals.
    hops : K, the number of graph-convolution hops (the paper uses 3).
    ffr_minutes : free-flow travel-time budget of FFR; None = one step of the panel's grid
        (the paper's "reachable within one time interval"); 0 turns FFR off (k-hop only).
    free_flow_kmh : free-flow speed of FFR.
    form : ``"hybrid"`` (the LSTM plus a graph path that starts at zero), ``"paper"`` (the
        paper's exact form: hidden size N, dense gates) or ``"shared"`` (the graph path
        alone); see :mod:`models.nn.tgclstm_net`.
    hidden : the LSTM path's state (``"hybrid"``; the LSTM forecaster's default).
    graph_cell : the hybrid's graph path: ``"shared"`` (a state per sensor, one gate
        matrix for all) or ``"dense"`` (the paper's cell: one unit per sensor, dense gates).
    graph_hidden : each sensor's state in the shared graph cell.
    embed : the shared graph cell's learned per-sensor embedding size (0 for none).
    dense_max_nodes : largest network given dense gates (their weights grow with N²).
    subgraph_nodes : networks of more sensors train the graph path by subgraph: METIS
        parts of about this many sensors plus the halo their forecasts read
        (:mod:`models.nn.subgraphs`), one part per step, so that memory stays that of one
        part; 0 always trains on the whole graph. The dense forms cannot (their gates
        read every sensor) and are refused above it.
    skip : per-sensor output skip: ``"linear"``, ``"last"`` or ``"none"``.
    dropout : the LSTM path's dropout (the paper form's time-locked input dropout).
    graph_dropout : the graph path's time-locked input dropout and output dropout.
    lambda_gc : λ1, weight of the L1 norm of the graph-convolution weights.
    lambda_nb : λ2, weight of the squared L2 norm of the neighbour weights.
    time_of_day, day_of_week, mask : input features besides the reading (see
        ``models.nn.inputs.InputSpec``); ``day_of_week`` None: decided on the training
        part (:func:`models.nn.inputs.weekend_inputs`).
    weekend_shift : the weekend flag read is that of the step this many steps ahead
        (None: the horizon).
    rest_days : the days of the week the weekend flag marks, Monday 0 (None: those the
        training part shows, else Saturday and Sunday).
    ensemble : networks trained independently (seeds ``train.seed * ensemble + m``) whose
        forecasts are averaged; training and prediction cost grow with it.
    train : optimiser, epochs, early stopping, seed, device.
    """

    window: int = 12
    horizon: int = 12
    level: float = 0.9
    hops: int = 3
    ffr_minutes: float | None = None
    free_flow_kmh: float = 100.0
    form: Form = "hybrid"
    hidden: int = 128
    graph_cell: Literal["dense", "shared"] = "shared"
    graph_hidden: int = 8
    embed: int = 4
    dense_max_nodes: int = 1000
    subgraph_nodes: int = 1000
    skip: SkipKind = "linear"
    dropout: float = 0.6
    graph_dropout: float = 0.1
    lambda_gc: float = 0.0
    lambda_nb: float = 0.0
    time_of_day: bool = True
    day_of_week: bool | None = None
    mask: bool = True
    weekend_shift: int | None = None
    rest_days: tuple[int, ...] | None = None
    ensemble: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.rest_days is not None:  # a JSON list as read from config.json
            object.__setattr__(self, "rest_days", tuple(int(d) for d in self.rest_days))
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1 member, got {self.ensemble}")
        if self.window < 1 or self.horizon < 1:
            raise ValueError(f"window and horizon must be >= 1, got {self.window}, {self.horizon}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {self.level}")
        if self.hops < 1:
            raise ValueError(f"hops (K) must be >= 1, got {self.hops}")
        if self.ffr_minutes is not None and not self.ffr_minutes >= 0:
            raise ValueError(f"ffr_minutes must be >= 0 or None, got {self.ffr_minutes}")
        if not self.free_flow_kmh > 0:
            raise ValueError(f"free_flow_kmh must be > 0, got {self.free_flow_kmh}")
        if self.hidden < 1 or self.graph_hidden < 1 or self.embed < 0:
            raise ValueError(
                f"hidden and graph_hidden must be >= 1 and embed >= 0, got {self.hidden}, "
                f"{self.graph_hidden}, {self.embed}"
            )
        if self.lambda_gc < 0 or self.lambda_nb < 0:
            raise ValueError(f"λ1 and λ2 must be >= 0, got {self.lambda_gc}, {self.lambda_nb}")
        for name in ("dropout", "graph_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        if self.dense_max_nodes < 1:
            raise ValueError(f"dense_max_nodes must be >= 1, got {self.dense_max_nodes}")
        if self.subgraph_nodes < 0:
            raise ValueError(f"subgraph_nodes must be >= 0 (0: never), got {self.subgraph_nodes}")
        if self.skip not in ("linear", "last", "none"):
            raise ValueError(f"skip must be 'linear', 'last' or 'none', got {self.skip!r}")
        if self.graph_cell not in ("dense", "shared"):
            raise ValueError(f"graph_cell must be 'dense' or 'shared', got {self.graph_cell!r}")

    @property
    def inputs(self) -> InputSpec:
        """The input features the network sees."""
        on = bool(self.day_of_week)
        shift = (self.weekend_shift or 0) if on else 0
        return InputSpec(self.time_of_day, on, self.mask, shift, self.rest_days or SATURDAY_SUNDAY)

    def hyper(self) -> dict[str, Any]:
        """The model's hyper-parameters without the training options (``config.json``)."""
        return {k: v for k, v in asdict(self).items() if k != "train"}


class TGCLSTM(NetworkForecaster):
    """The registered TGC-LSTM forecaster (``"tgclstm"``); it needs ``panel.graph``.

    Parameters
    ----------
    config : hyper-parameters (default :class:`TGCLSTMConfig` with ``DEFAULT_TRAIN``).
    train : training options; replaces ``config.train``.
    hyper : fields of :class:`TGCLSTMConfig` to replace, e.g. ``TGCLSTM(hidden=16)`` (this
        is how ``models.forecasters.factory.build_model`` passes ``window``, ``horizon`` and
        ``level``).
    """

    name: ClassVar[str] = "tgclstm"
    USES_GRAPH: ClassVar[bool] = True
    PROBABILISTIC: ClassVar[bool] = False
    DEFAULT_TRAIN: ClassVar[TrainConfig] = TrainConfig(epochs=200, patience=20, loss="huber")

    def __init__(
        self, config: TGCLSTMConfig | None = None, *, train: TrainConfig | None = None, **hyper: Any
    ) -> None:
        config = config or TGCLSTMConfig(train=self.DEFAULT_TRAIN)
        known = set(TGCLSTMConfig.__dataclass_fields__) - {"train"}
        unknown = sorted(set(hyper) - known)
        if unknown:
            raise TypeError(f"unknown TGC-LSTM option(s) {unknown}; known: {sorted(known)}")
        self.config = replace(config, **hyper, train=train or config.train)
        self.window = self.config.window
        self.horizon = self.config.horizon
        self.level = self.config.level
        self.sensor_ids = ()
        self.halfwidth = None
        self.net: TGCLSTMEnsemble | None = None
        self.scaler: Scaler | None = None
        self.history: TrainHistory | None = None  # of the first member
        self.histories: list[TrainHistory] = []
        self.device = torch.device("cpu")
        self.graph_info: dict[str, Any] = {}
        self.coords: np.ndarray | None = None
        self.fingerprint: str | None = None
        self.valid_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training
    def hop_lists(self, panel: SensorPanel) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The K edge lists ``Ã^k ⊙ FFR`` of ``panel.graph`` and a record of how they were made."""
        graph = panel.graph
        if graph is None:
            raise ValueError(
                "tgclstm needs a road graph: load a data set with one (los-loop, simulated, "
                "metr-la) or pass --adjacency PATH with a CSV data set"
            )
        cfg = self.config
        minutes = cfg.ffr_minutes
        if minutes is None:
            minutes = panel.freq.total_seconds() / 60.0 if panel.n_time > 1 else 5.0
        use_ffr = minutes > 0
        hops = [
            np.asarray(
                graph.hops(
                    k,
                    minutes=minutes if use_ffr else None,
                    free_flow_kmh=cfg.free_flow_kmh if use_ffr else None,
                ),
                dtype=np.int64,
            )
            for k in range(1, cfg.hops + 1)
        ]
        # GraphLike does not promise distances; RoadGraph says whether FFR had real lengths.
        has_distances = getattr(graph, "has_distances", None)
        if not use_ffr:
            ffr = "off (k-hop neighbourhoods only)"
        elif has_distances is False:
            ffr = "hop-count fallback (the graph has no distances or coordinates)"
        else:
            ffr = "road distances"
        info = {
            "ffr_minutes": minutes if use_ffr else None,
            "free_flow_kmh": cfg.free_flow_kmh if use_ffr else None,
            "ffr": ffr,
            "edges_per_hop": [int(h.shape[1]) for h in hops],
            "num_nodes": int(graph.num_nodes),
            "form": self.config.form,
            "graph_cell": self.config.graph_cell,
        }
        return hops, info

    def member_seed(self, member: int) -> int:
        """Seed of ensemble member ``member``: distinct across members and across the
        ``train.seed`` of different fits (``roadcast train --seeds``)."""
        return self.config.train.seed * self.config.ensemble + member

    def subgraphs(self, hops: Sequence[np.ndarray], num_nodes: int) -> Partition | None:
        """The parts the graph path trains on (None: the whole graph), see
        ``TGCLSTMConfig.subgraph_nodes``."""
        cfg = self.config
        if not cfg.subgraph_nodes or num_nodes <= cfg.subgraph_nodes:
            return None
        if cfg.form == "paper" or (cfg.form == "hybrid" and cfg.graph_cell == "dense"):
            raise ValueError(
                f"{num_nodes} sensors are more than subgraph_nodes={cfg.subgraph_nodes}, but "
                "the dense gates (form='paper' or graph_cell='dense') read every sensor and "
                "cannot train by subgraph: use graph_cell='shared', or subgraph_nodes=0 to "
                "train on the whole graph"
            )
        return partition(hops, num_nodes, cfg.subgraph_nodes, seed=cfg.train.seed)

    def build_net(self, hops: Sequence[np.ndarray], num_nodes: int, member: int = 0) -> TGCLSTMNet:
        """A fresh network for these hop lists (initial weights from ``member_seed``)."""
        cfg = self.config
        with seeded(self.member_seed(member)):
            return TGCLSTMNet(
                hops,
                num_nodes,
                spec=cfg.inputs,
                horizon=cfg.horizon,
                window=cfg.window,
                form=cfg.form,
                hidden=cfg.hidden,
                graph_hidden=cfg.graph_hidden,
                embed=cfg.embed,
                skip=cfg.skip,
                dropout=cfg.dropout,
                graph_dropout=cfg.graph_dropout,
                graph_cell=cfg.graph_cell,
                dense_max_nodes=cfg.dense_max_nodes,
            )

    def fit(
        self,
        panel: SensorPanel,
        *,
        valid: SensorPanel | None = None,
        lstm: RecurrentForecaster | None = None,
    ) -> Self:
        """Train on ``panel``; with ``valid``, early-stop on it and calibrate intervals.

        ``lstm``: an LSTM forecaster fitted on the same data with this model's LSTM
        settings and seed (:meth:`first_stage_settings`), used as the hybrid's first stage
        instead of training the same network again (a benchmark that fits both models).
        """
        check_2d(panel, self.name)
        c = self.config
        on, shift, days = weekend_inputs(
            c.day_of_week, c.weekend_shift, panel, c.horizon, c.rest_days
        )
        self.config = replace(c, day_of_week=on, weekend_shift=shift, rest_days=days)
        if lstm is not None:
            self._check_first_stage(lstm, panel)
        hops, info = self.hop_lists(panel)
        cfg = self.config
        self.sensor_ids = panel.sensor_ids
        self.scaler = Scaler.fit(panel)
        lambdas = (cfg.lambda_gc, cfg.lambda_nb)
        parts = self.subgraphs(hops, panel.n_nodes)

        def penalty(module: nn.Module) -> Tensor:
            return module.penalty(*lambdas)  # type: ignore[operator]

        def train(net: TGCLSTMNet, member: int) -> TrainHistory:
            return fit_network(
                net,
                panel,
                valid,
                window=cfg.window,
                horizon=cfg.horizon,
                scaler=self.scaler,  # type: ignore[arg-type]
                spec=cfg.inputs,
                config=replace(cfg.train, seed=self.member_seed(member)),
                extra_loss=penalty if any(lambdas) else None,
                parts=parts if net.trains_by_part else None,
            )

        members, self.histories, kept = [], [], []
        for member in range(cfg.ensemble):
            net = self.build_net(hops, panel.n_nodes, member=member)
            if net.lstm is None:
                self.histories.append(train(net, member))
            else:
                first = None
                if lstm is not None and lstm.module is not None and lstm.history is not None:
                    net.load_lstm(lstm.module)
                    first = lstm.history
                self.histories.append(
                    self._fit_hybrid(net, train, member, valid is not None, first=first)
                )
                kept.append(net.use_graph)
            members.append(net)
        self.net = TGCLSTMEnsemble(members)
        self.history = self.histories[0]
        self.graph_info = {**info, **({"graph_path_kept": kept} if kept else {})}
        if parts is not None:
            self.graph_info["subgraphs"] = parts.describe()
        self.coords = None if panel.coords is None else np.array(panel.coords)
        self.finish_network_fit(panel, valid, cfg.train.device)
        return self

    def first_stage_settings(self) -> dict[str, Any]:
        """The LSTM forecaster keywords whose network is this hybrid's first stage."""
        cfg = self.config
        return {
            "window": cfg.window, "horizon": cfg.horizon, "hidden": cfg.hidden,
            "dropout": cfg.dropout, "skip": cfg.skip, "time_of_day": cfg.time_of_day,
            "day_of_week": cfg.day_of_week, "mask": cfg.mask, "weekend_shift": cfg.weekend_shift,
            "rest_days": None if cfg.rest_days is None else list(cfg.rest_days),
        }  # fmt: skip

    def _check_first_stage(self, lstm: RecurrentForecaster, panel: SensorPanel) -> None:
        """Refuse an LSTM that is not what this model's first stage would train."""
        cfg = self.config
        ours = {**self.first_stage_settings(), "level": lstm.level}
        theirs = lstm.describe()
        same_train = replace(lstm.train, progress=False, device="auto") == replace(
            cfg.train, seed=self.member_seed(0), progress=False, device="auto"
        )
        if (
            lstm.name != "lstm"
            or cfg.form != "hybrid"
            or cfg.ensemble != 1
            or theirs != ours
            or not same_train
            or lstm.sensor_ids != panel.sensor_ids
        ):
            raise ValueError(
                "the given LSTM is not this hybrid's first stage: it needs form='hybrid', one "
                f"member, an LSTM with {self.first_stage_settings()} and the same training "
                "options, seed and sensors"
            )

    @staticmethod
    def _fit_hybrid(
        net: TGCLSTMNet,
        train: Callable[[TGCLSTMNet, int], TrainHistory],
        member: int,
        validated: bool,
        first: TrainHistory | None = None,
    ) -> TrainHistory:
        """The hybrid in two stages: its LSTM path (and skip) alone, then the graph path
        on top of the frozen LSTM; the graph path is dropped (its head zeroed) unless it
        lowered the validation loss, so its validation loss (the training loss, on scaled
        values) is never above the LSTM stage's; its validation RMSE, another score, can
        be a little above. ``first``: the history of an LSTM path already trained (loaded with
        :meth:`TGCLSTMNet.load_lstm`). Returns the history of both stages, one after the
        other."""
        if first is None:
            net.train_only("lstm")
            first = train(net, member)
        net.train_only("graph")
        second = train(net, member)
        net.lstm_frozen = False
        for param in net.parameters():
            param.requires_grad_(True)
        before, after = first.best_valid_loss, second.best_valid_loss
        if validated and (after is None or before is None or after >= before):
            net.drop_graph()
            net.use_graph = False
        return TrainHistory(
            train_loss=first.train_loss + second.train_loss,
            valid_loss=first.valid_loss + second.valid_loss,
            lr=first.lr + second.lr,
            best_epoch=first.best_epoch
            if not net.use_graph
            else len(first.train_loss) + second.best_epoch,
            best_valid_loss=before if not net.use_graph else after,
            stopped_early=second.stopped_early,
            seconds=first.seconds + second.seconds,
            device=second.device,
        )

    # ------------------------------------------------------------------ prediction
    def network(self) -> TGCLSTMEnsemble | None:
        return self.net

    def input_spec(self) -> InputSpec:
        return self.config.inputs

    def influence(self) -> dict[str, np.ndarray]:
        """The learned graph-convolution weights, one per (hop, source, target) edge.

        Returns
        -------
        dict of ``[E]`` arrays: int64 ``hop`` (1..K), ``source`` (j), ``target`` (i) and
        float32 ``weight`` = ``W_gc^hop[i, j]``, how strongly sensor j feeds sensor i (the
        mean of the ensemble's members that use their graph path).

        Raises
        ------
        ValueError
            When training dropped every member's graph path.
        """
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() or load() before influence()")
        conv = self.net.member(0).conv
        with torch.no_grad():
            return {
                "hop": conv.hop_of_edge().cpu().numpy(),
                "source": conv.col.cpu().numpy().copy(),
                "target": conv.targets().cpu().numpy(),
                "weight": self.net.graph_weights().cpu().numpy().copy(),
            }

    # ------------------------------------------------------------------ bundles
    def describe(self) -> dict[str, Any]:
        return self.config.hyper()

    def save(self, directory: str | Path) -> None:
        """Write the bundle: weights (with the hop edge lists) and ``config.json``."""
        self.save_network(
            directory,
            self.config.train,
            graph=self.graph_info,
            coords=None if self.coords is None else self.coords.tolist(),
            history=None if self.history is None else self.history.to_dict(),
            histories=[h.to_dict() for h in self.histories],
        )

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Rebuild from a bundle (no road graph needed: the edge lists are in the weights);
        the network goes to ``auto`` (CUDA when present, else CPU)."""
        bundle = read_model_bundle(directory, cls.name)
        config = bundle.config
        try:
            train = replace(TrainConfig.from_dict(config["train"]), device="auto")
            hyper = {"weekend_shift": 0, **config["hyper"]}  # 0: older bundles
            model = cls(TGCLSTMConfig(**hyper, train=train))
            restore_forecaster(model, config)
            model.scaler = Scaler.from_dict(config["scaler"])
            hops = TGCLSTMNet.hops_from_state(bundle.tensors, prefix="members.0.")
            graph = dict(config.get("graph") or {})
            coords = config.get("coords")
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"bundle {directory} lacks or mangles {exc}; it was written by another "
                "version of tgclstm: retrain it"
            ) from None
        n = len(model.sensor_ids)
        net = TGCLSTMEnsemble(
            [model.build_net(hops, n, member=m) for m in range(model.config.ensemble)]
        )
        load_module_tensors(net, bundle.tensors)
        for m, kept in enumerate(graph.get("graph_path_kept") or []):
            net.member(m).use_graph = bool(kept)  # a dropped graph path is not computed
        model.net = model.place_loaded(net)
        model.graph_info = graph
        model.coords = None if coords is None else np.asarray(coords, dtype=np.float64)
        return model
