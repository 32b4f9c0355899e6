"""The bridge from the predecessor's Redis-stream protocol to the fleet's tasks (CONTRACT §8.6).

`protocol` is pure (command -> task call, result -> reply); `streams` is its Redis edge;
`server` is the loop `spawner bridge` runs.
"""
