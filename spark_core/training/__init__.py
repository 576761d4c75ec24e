"""Training the adapters on LoRA / QLoRA: the SFT baseline (``sft``), SPaRK's offline PPO
(``ppo``: the trainer in ``ppo_trainer``, the loss in ``ppo_loss``) and step-level DPO
(``dpo``, its pairs in ``dpo_pairs``); ``registry`` is the table of trainers
``training.trainers`` names, ``adapter_run`` what their runs share."""
