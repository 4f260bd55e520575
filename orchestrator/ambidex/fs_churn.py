"""fs_churn: shape the example churn data into a mart frame with a key and monthly signup cohorts."""
from __future__ import annotations

import numpy as np


def prepare_churn(df, as_of: str = "2024-12-01"):
    """Turn modeldata's ``wa_churn`` (no id, no date) into a mart frame with ``customer_id`` and ``signup_month``.

    ``customer_id`` is the 1-based row number; ``signup_month`` is the first of the month
    ``tenure`` months before ``as_of`` (UTC), so monthly windows are signup cohorts.

    >>> import pandas as pd
    >>> prepare_churn(pd.DataFrame({"tenure": [0, 13]}))["signup_month"].dt.strftime("%Y-%m").tolist()
    ['2024-12', '2023-11']
    """
    import pandas as pd

    out = df.copy()
    out.insert(0, "customer_id", np.arange(1, len(out) + 1, dtype=np.int64))
    base = pd.Period(as_of[:7], freq="M")
    tenure = pd.to_numeric(out["tenure"]).astype("Int64")
    months = [(base - int(t)).to_timestamp().tz_localize("UTC") if t is not pd.NA else pd.NaT for t in tenure]
    out.insert(1, "signup_month", pd.to_datetime(pd.Series(months, dtype=object), utc=True).astype("datetime64[ns, UTC]"))
    return out
