"""Training frameworks driving `lhopt.LearnedOptimizer` (docs/integrations.md).

Each integration only translates a framework's hooks into what a plain loop does by hand: the run's
budget (`total_steps`), the train and validation losses (`report`), and no LR scheduler touching
the learning rate the policy sets. Import the one you use; each needs lhopt's `integrations`
extra (`pip install 'lhopt[integrations]'`):

- `lhopt.integrations.transformers.LHOPTTrainer`: a Hugging Face `Trainer`;
- `lhopt.integrations.lightning.LHOPTCallback` and `learned_optimizer`: PyTorch Lightning.
"""
