"""Recipes over the icreward library: the study (`icreward experiment`) and the shipped default model's recipe.

Like open_clip_train beside open_clip: the library never imports this package (the CLI's `experiment` command does),
and every recipe takes its paths as arguments.
"""
