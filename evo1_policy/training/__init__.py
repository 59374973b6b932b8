"""Training: the two-stage trainer (`trainer`: TrainConfig, Trainer, `evo1 train`), the pieces a
training step is made of that other loops share (`steps`), and stage 0, vision-language
pretraining of the backbone (`vlm_pretrain`). The data it reads lives in `evo1_policy.data`."""
