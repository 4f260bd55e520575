"""prepare: make a small synthetic customer table (replace with a read of your own data)."""
import numpy as np
import pandas as pd


def main(ctx):
    rng = np.random.default_rng(ctx.seed)
    n = int(ctx.params.get("n_rows", 2000))
    tenure = rng.integers(1, 72, n)
    charges = rng.normal(65, 20, n).round(2)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    logit = -0.5 - 0.04 * tenure + 0.02 * (charges - 65) + np.where(plan == "basic", 0.6, 0.0)
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df = pd.DataFrame({
        "customer_id": np.arange(1, n + 1, dtype="int64"),
        "tenure": tenure.astype("int64"),
        "monthly_charges": charges,
        "plan": pd.Categorical(plan, categories=["basic", "plus", "pro"]),
        "churned": pd.Categorical(churned, categories=["no", "yes"]),
    })
    ctx.write_table("customers", df)
    ctx.log_metric("n_rows", n)
