"""The ClientApp: ordinary Flower training code, plus one mod that records it on the ledger."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedledger.flower import LedgerMod
from fedledger_flower_app.task import Net, client_data, train

torch.set_num_threads(1)  # many virtual clients share the machine's cores

# The one fedledger line: key, relay and task come from the run config (pyproject.toml).
app = ClientApp(mods=[LedgerMod()])


@app.train()
def fit(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    net = Net()
    net.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    x, y = client_data(int(context.node_config["partition-id"]), int(cfg["samples-per-client"]))
    loss = train(net, x, y, epochs=int(cfg["local-epochs"]), lr=float(cfg["learning-rate"]))
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(y)})
    return Message(
        RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics}), reply_to=msg
    )
