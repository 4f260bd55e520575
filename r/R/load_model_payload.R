#' Load the payload of a model folder, verified before it is deserialised
#'
#' The single code path that reads `model.rds` (reliability promise 3): it
#' validates `model.json` (a newer `contract_version` is refused), checks the
#' payload path stays inside the folder, checks every file listed in `files`
#' against its sha256 and size (a mismatch fails with `artifact.hash_mismatch`
#' naming the file and both digests, and nothing is deserialised), refuses any
#' format but `rds` (`artifact.format_not_allowed`), checks the minimum R
#' version and the packages, and only then deserialises the payload from bytes
#' read once and checked against their sha256 again (what is loaded is what was
#' verified, even if the file is replaced meanwhile). A folder not yet
#' registered (`files` null) is loaded without the hash check.
#'
#' @param folder Path of the model folder.
#' @return The payload, with the manifest as attribute `"manifest"`.
#' @export
#' @examples
#' \dontrun{
#' m <- load_model_payload("contract/golden/r/model")
#' attr(m, "manifest")$task
#' }
load_model_payload <- function(folder) {
  folder <- normalizePath(folder, mustWork = FALSE)
  load_verified_payload(folder, verified_manifest(folder))
}

#' The second half of load_model_payload(): the model's packages, then the payload (read_verified_rds),
#' for a manifest that verified_manifest() returned for this folder.
#' @noRd
load_verified_payload <- function(folder, manifest) {
  folder <- normalizePath(folder, mustWork = FALSE)
  rt <- manifest$runtime
  missing <- names(rt$packages)[!vapply(names(rt$packages), requireNamespace, logical(1), quietly = TRUE)]
  if (length(missing)) {
    amb_abort("stage.runtime_missing",
              paste0("The model needs R package(s) not installed: ", paste(missing, collapse = ", "), "."),
              paste0("Install them: apt-get install ", paste0("r-cran-", tolower(missing), collapse = " "), "."))
  }
  model <- read_verified_rds(folder, rt$payload, manifest$files[[rt$payload]])
  attr(model, "manifest") <- manifest
  model
}

#' The manifest of a model folder, validated, with every listed file checked against its sha256, the
#' format and the R version checked: everything load_model_payload() does before it loads the model's
#' packages and deserialises the payload (a caller may check its input against the signature between).
#' @noRd
verified_manifest <- function(folder) {
  folder <- normalizePath(folder, mustWork = FALSE)
  manifest_path <- file.path(folder, "model.json")
  manifest <- json_read(manifest_path, code = "contract.invalid_manifest")
  validate_document("model", manifest)
  rt <- manifest$runtime
  if (!identical(rt$language, "r") || !identical(rt$format, "rds")) {
    amb_abort("artifact.format_not_allowed",
              paste0("The R runtime loads only format 'rds'; ", manifest_path, " has language '",
                     rt$language, "', format '", rt$format, "'."),
              "A model is scored by the runtime that produced it: score this one with the Python SDK.")
  }
  model_file_path(folder, rt$payload)
  verify_model_files(folder, manifest)
  if (getRversion() < package_version(rt$min_language_version)) {
    amb_abort("stage.runtime_missing",
              paste0("The model needs R >= ", rt$min_language_version, "; this is R ", getRversion(), "."),
              "Upgrade R on this host.")
  }
  manifest
}

model_file_path <- function(folder, rel) {
  parts <- strsplit(rel, "[/\\\\]")[[1]]
  path <- file.path(folder, rel)
  inside <- startsWith(normalizePath(path, mustWork = FALSE), paste0(folder, "/"))
  if (grepl("^[/\\\\]", rel) || any(parts == "..") || !inside) {
    amb_abort("contract.invalid_manifest", paste0("File '", rel, "' escapes the model folder ", folder, "."),
              "Manifest paths are relative to the model folder, without '..'.")
  }
  if (!file.exists(path)) {
    amb_abort("contract.invalid_manifest", paste0("model.json names '", rel, "', which is not in ", folder, "."),
              "The folder is incomplete; re-register the model version.")
  }
  path
}

verify_model_files <- function(folder, manifest) {
  files <- manifest$files
  if (is.null(files)) return(invisible())
  if (!manifest$runtime$payload %in% names(files)) {
    amb_abort("contract.invalid_manifest",
              paste0("model.json lists files but not its payload '", manifest$runtime$payload, "'."),
              "Re-register the model so every file is hashed.")
  }
  for (rel in names(files)) {
    path <- model_file_path(folder, rel)
    check_file_hash(folder, rel, files[[rel]], digest::digest(file = path, algo = "sha256"), file.size(path))
  }
  invisible()
}

check_file_hash <- function(folder, rel, entry, actual, size) {
  if (!identical(actual, entry$sha256) || size != entry$size) {
    amb_abort("artifact.hash_mismatch",
              paste0("File '", rel, "' of ", folder, " has sha256 ", actual, " (", size,
                     " bytes) but model.json records ", entry$sha256, " (", entry$size, " bytes)."),
              "The file changed after registration: do not load it. Run `ambidex verify` and restore the version.",
              file = rel, expected = entry$sha256, actual = actual)
  }
}

#' The payload deserialised from bytes read once and checked against model.json again (when it lists
#' them): what is loaded is exactly what was verified, even if the file is replaced meanwhile.
#' @noRd
read_verified_rds <- function(folder, rel, entry) {
  path <- model_file_path(folder, rel)
  bytes <- readBin(path, "raw", n = file.size(path))
  if (!is.null(entry)) {
    check_file_hash(folder, rel, entry, digest::digest(bytes, algo = "sha256", serialize = FALSE), length(bytes))
  }
  magic <- function(...) length(bytes) >= length(c(...)) && identical(bytes[seq_along(c(...))], as.raw(c(...)))
  stream <- if (magic(0x1f, 0x8b)) memDecompress(bytes, "gzip")
    else if (magic(0x42, 0x5a, 0x68)) memDecompress(bytes, "bzip2")
    else if (magic(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) memDecompress(bytes, "xz")
    else bytes
  unserialize(stream)
}
