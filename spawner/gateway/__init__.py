"""The model gateway (ARCHITECTURE §13, CONTRACT §8.1): agents reach their model, their keys never reach them.

`core` is the pure part (routing, headers, usage read from the provider's answer, prices,
budgets); `server` is the aiohttp edge that `spawner gateway` runs; `prices.json` the default
price table.
"""
