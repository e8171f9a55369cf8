"""Reward-guided generation with diffusers image-to-video pipelines: tiny offline pipelines for tests and demos
(`icreward.generation.tiny`) and best-of-N sampling ranked by a reward (`icreward.generation.best_of_n`).

diffusers is an optional dependency (`pip install icreward[finetune]`); these modules import it when called.
"""
