# Hermetic helpers: every test gets its own temporary folder; nothing touches
# the repository except reading contract/ (skipped when the package is tested
# outside the repository).

local_tmp_dir <- function(env = parent.frame()) {
  dir <- tempfile("ambidex-test-")
  dir.create(dir)
  withr::defer(unlink(dir, recursive = TRUE), envir = env)
  normalizePath(dir)
}

# The repository's contract/ folder, searched upwards from the test folder.
repo_contract_dir <- function() {
  dir <- normalizePath(getwd())
  for (i in 1:6) {
    if (file.exists(file.path(dir, "contract", "SPEC.md"))) return(file.path(dir, "contract"))
    dir <- dirname(dir)
  }
  NULL
}

skip_without_repo <- function() {
  if (is.null(repo_contract_dir())) skip("not inside the ambidex repository")
}

# Write a context.json for a stage under `root` and return its path.
write_context <- function(root, inputs = list(), outputs = list(), params = list(),
                          seed = 42L, contract_version = 1L, extra = list()) {
  out_dir <- file.path(root, "out")
  dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
  ctx <- c(list(
    contract_version = contract_version,
    run_id = "0123456789abcdef0123456789abcdef",
    pipeline = "churn", stage = "train", lang = "r",
    project_root = root, output_dir = out_dir,
    params = if (length(params)) params else ambidex:::json_object(),
    inputs = if (length(inputs)) inputs else ambidex:::json_object(),
    outputs = if (length(outputs)) outputs else ambidex:::json_object(),
    window = NULL, seed = seed
  ), extra)
  path <- file.path(out_dir, "context.json")
  ambidex:::json_write(ctx, path)
  path
}

read_result <- function(context_path) {
  jsonlite::fromJSON(file.path(dirname(context_path), "result.json"), simplifyVector = FALSE)
}

# A small deterministic classification table.
churn_table <- function(n = 200, seed = 1) {
  set.seed(seed)
  x1 <- rnorm(n)
  x2 <- sample(0:30, n, replace = TRUE)
  plan <- factor(sample(c("basic", "pro", "team"), n, replace = TRUE), levels = c("basic", "pro", "team"))
  p <- plogis(-0.3 + 1.5 * x1 + c(basic = 0.7, pro = 0, team = -0.7)[as.character(plan)])
  data.frame(id = seq_len(n), x1 = x1, x2 = x2, plan = plan,
             churn = factor(ifelse(runif(n) < p, "Yes", "No"), levels = c("No", "Yes")))
}
