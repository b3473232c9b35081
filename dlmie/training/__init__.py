"""Training: one epoch loop (`loop.fit`) and what each model family plugs into it
(`classifier`: the Tiny-ImageNet conv net; `captioner`: Show and Tell and Show-Attend-Tell)."""
