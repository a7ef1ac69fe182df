"""Pusher: TFX's Pusher that never pushes the model already serving."""
