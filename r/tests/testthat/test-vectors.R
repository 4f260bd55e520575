# contract/vectors/*.json: {"schema", "cases": [{"name", "document", "valid", "error"}]}
# Both SDKs must return the same verdict and code for every case.

vector_files <- function() {
  dir <- repo_contract_dir()
  if (is.null(dir)) return(character())
  list.files(file.path(dir, "vectors"), pattern = "\\.json$", full.names = TRUE)
}

verdict <- function(kind, document) {
  tryCatch({
    validate_document(kind, document)
    list(valid = TRUE, error = NULL)
  }, ambidex_error = function(e) list(valid = FALSE, error = e$code))
}

test_that("every shared contract vector gets the same verdict and code", {
  skip_without_repo()
  files <- vector_files()
  skip_if(length(files) == 0L, "contract/vectors is empty")
  n <- 0L
  for (file in files) {
    spec <- ambidex:::json_read(file)
    for (case in spec$cases) {
      got <- verdict(spec$schema, case$document)
      label <- paste0(basename(file), ": ", case$name)
      expect_identical(got$valid, case$valid, label = label)
      expect_identical(got$error, case$error, label = label)
      n <- n + 1L
    }
  }
  expect_gt(n, 0L)
})
