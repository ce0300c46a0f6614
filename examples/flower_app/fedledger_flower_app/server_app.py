"""The ServerApp: Flower's FedAvg, wrapped so that every round is the ledger's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedledger.flower import LedgerStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes = len(list(grid.get_node_ids()))
    strategy = LedgerStrategy(
        FedAvg(fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes),
        task_id=int(cfg["fedledger-task-id"]),
        mode=str(cfg["fedledger-mode"]),  # type: ignore[arg-type]
    )
    result = strategy.start(
        grid, strategy.global_arrays(), num_rounds=int(cfg["num-server-rounds"])
    )
    if cfg.get("result-file"):
        arrays = result.arrays.to_numpy_ndarrays() if result.arrays else []
        out: dict[str, Any] = {
            "rounds": [r.to_json() for r in strategy.rounds],
            "final_arrays_sha256": {
                k: hashlib.sha256(a.tobytes()).hexdigest()
                for k, a in zip(result.arrays.keys(), arrays, strict=True)
            },
            "train_metrics": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        }
        Path(str(cfg["result-file"])).write_text(json.dumps(out, indent=1))
