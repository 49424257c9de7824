"""Training: the task-agnostic engine, checkpoints, distributed helpers, and the pre-training / tuning tasks.

Submodules are imported where needed (`from p2gmed.train.pretrain_task import PretrainTask`), so importing
this package stays cheap.
"""
