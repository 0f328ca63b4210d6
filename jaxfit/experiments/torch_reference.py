"""The seeds' two experiments in plain PyTorch (CPU, float32): no Lightning, no W&B. Written
from ../shared/seeds/ for the parity tests (tests/test_torch_parity.py) and the benchmark's
PyTorch side (jaxfit.bench); nothing else in jaxfit imports torch.

sumsq: the forum's `x2` LightningModule, with Lightning's loop made explicit: Adam, then
StepLR stepped once per epoch (Lightning's default interval for a scheduler returned from
configure_optimizers). stepfit: K. Frank's script: SGD, and for the wide model CyclicLR stepped
after every optimiser step.
"""

from __future__ import annotations

import torch

SEED_FC1_WEIGHT = [[0.1], [-0.1], [0.5], [-0.5], [0.6], [-0.6], [1.5], [-1.5], [3.9], [-3.9], [2.0], [-2.0], [5.0], [1.0]]
SEED_FC1_BIAS = [0, 0, -0.05, -0.05, -0.24, -0.24, -1.35, -1.35, -8.58, -8.58, -7.8, -7.8, -27.5, -7.1]


class SumSq(torch.nn.Module):
    """The seed's x2 module: shared Linear(1,14) -> ReLU -> Linear(14,1) over 64 inputs, Linear(64,1)."""

    def __init__(self, p: float = 0.2):
        super().__init__()
        self.dropout_ff = torch.nn.Dropout(p=p)
        self.fc1 = torch.nn.Linear(1, 14)
        self.fc2 = torch.nn.Linear(14, 1)
        self.activation1 = torch.nn.ReLU()
        self.fc3 = torch.nn.Linear(64, 1)

    def forward(self, x):
        x = x.float()
        batch_sz = x.shape[0]
        x = x.reshape(x.shape[0] * x.shape[1], 1)
        x = self.dropout_ff(x)
        x = self.activation1(self.fc1(x))
        x = self.dropout_ff(x)
        x = self.fc2(x)
        x = x.reshape(batch_sz, 64)
        x = self.dropout_ff(x)
        return self.fc3(x)

    def manual_init(self) -> SumSq:
        """The seed's hand-made near-optimal parameters."""
        self.fc1.weight.data = torch.tensor(SEED_FC1_WEIGHT)
        self.fc1.bias.data = torch.tensor(SEED_FC1_BIAS, dtype=torch.float32)
        self.fc2.weight.data = torch.ones(1, 14)
        self.fc2.bias.data = torch.tensor([0.01])
        self.fc3.weight.data = torch.ones(1, 64)
        self.fc3.bias.data = torch.tensor([-0.01])
        return self


class StepModel(torch.nn.Module):
    """The seed's Model (width 1) and ModelB (width 8)."""

    def __init__(self, width: int):
        super().__init__()
        self.linear1 = torch.nn.Linear(1, width)
        self.linear2 = torch.nn.Linear(width, 1)
        self.relu = torch.nn.LeakyReLU(negative_slope=0.001)

    def forward(self, x):
        return self.relu(self.linear2(self.relu(self.linear1(x))))


def state_numpy(model: torch.nn.Module) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def train_sumsq(model: SumSq, x, y, steps_per_epoch: int, lr: float = 1e-4, step_size: int = 20, gamma: float = 0.9) -> list[float]:
    """Lightning's fit loop, explicit: per step zero_grad, MSE, backward, Adam step; StepLR after
    each epoch. x: [steps, batch, 64], y: [steps, batch, 1]. Returns every step's loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    model.train()
    losses = []
    for step in range(len(x)):
        loss = torch.nn.MSELoss(reduction="mean")(model(torch.as_tensor(x[step])), torch.as_tensor(y[step]).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % steps_per_epoch == 0:
            sched.step()
    return losses


def train_stepfit(model: StepModel, x, y, cyclic: bool, optimizer=None) -> list[float]:
    """The seed's loop without the early stop: SGD lr 0.1 (or `optimizer(parameters)`), CyclicLR
    for the wide model. x, y: [steps, 100, 1]. Returns every step's loss."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1) if optimizer is None else optimizer(model.parameters())
    sched = None
    if cyclic:
        sched = torch.optim.lr_scheduler.CyclicLR(
            opt, base_lr=0.001, max_lr=0.5, step_size_up=100, step_size_down=900, mode="triangular2", cycle_momentum=False
        )
    loss_fn = torch.nn.MSELoss()
    losses = []
    for step in range(len(x)):
        loss = loss_fn(model(torch.as_tensor(x[step])), torch.as_tensor(y[step]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def mse(model: torch.nn.Module, x, y) -> float:
    model.eval()
    with torch.no_grad():
        value = torch.nn.MSELoss()(model(torch.as_tensor(x)), torch.as_tensor(y)).item()
    model.train()
    return value
