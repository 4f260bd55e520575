# load_wa_churn: export the real `wa_churn` data from Debian's r-cran-modeldata as a typed table.
# The data is loaded at run time, never copied into the repository (its licence terms are unstated).
# A customer id and a signup month (derived from tenure, relative to `as_of`) are added so the
# feature store can version the data in monthly signup cohorts.
main <- function(ctx) {
  # system.file, not requireNamespace: loading modeldata's namespace (and its imports) costs ~0.6 s a run,
  # and utils::data reads the data set without it
  if (!nzchar(system.file(package = "modeldata"))) {
    stop("The churn example needs the R package 'modeldata' (Debian: apt-get install r-cran-modeldata).")
  }
  env <- new.env()
  utils::data("wa_churn", package = "modeldata", envir = env)
  churn <- as.data.frame(env$wa_churn)
  as_of <- as.POSIXct(ctx$params$as_of %||% "2024-12-01", tz = "UTC")
  months_back <- as.integer(churn$tenure)
  signup <- seq(as_of, by = "-1 month", length.out = max(months_back) + 1L)[months_back + 1L]
  churn <- cbind(
    data.frame(customer_id = seq_len(nrow(churn)), signup_month = signup),
    churn
  )
  ambidex::ctx_write_table(ctx, "churn", churn)
  ambidex::ctx_log_metric(ctx, "n_rows", nrow(churn))
}

`%||%` <- function(a, b) if (is.null(a)) b else a
