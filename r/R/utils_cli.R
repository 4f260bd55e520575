# Calling the `ambidex` command line with --json (one implementation of
# tracking and registry, in Python; R only wraps it).
#
# The executable is getOption("ambidex.cli"), default Sys.getenv("AMBIDEX_CLI",
# "ambidex"); a vector such as c("python", "-m", "ambidex.cli.main") is a
# command plus leading arguments. Data comes on stdout as JSON; an error is a
# JSON envelope on stderr {code, message, exit_code, hint} and is re-signalled
# as the condition class ambidex_<code with dots as underscores>.

cli_command <- function() {
  cmd <- getOption("ambidex.cli", Sys.getenv("AMBIDEX_CLI", "ambidex"))
  if (!length(cmd) || !nzchar(cmd[1])) cmd <- "ambidex"
  cmd
}

amb_cli_json <- function(args) {
  cmd <- cli_command()
  out <- tempfile("ambidex-out-")
  err <- tempfile("ambidex-err-")
  on.exit(unlink(c(out, err)), add = TRUE)
  full <- c(cmd[-1], args, "--json")
  status <- suppressWarnings(tryCatch(
    system2(cmd[1], shQuote(full), stdout = out, stderr = err, env = cli_env()),
    error = function(e) 127L
  ))
  stdout <- read_text(out)
  stderr <- read_text(err)
  if (!identical(as.integer(status), 0L)) cli_signal_error(stderr, status, cmd)
  if (!nzchar(trimws(stdout))) return(NULL)
  json_parse(stdout, what = "The output of `ambidex --json`", code = "stage.failed")
}

# R's start-up script puts its own library folders first in LD_LIBRARY_PATH
# (R_HOME/lib, the system's multiarch lib folder, Java). A Python interpreter
# started from R would then load the system's libpython instead of its own and
# crash, so the CLI gets LD_LIBRARY_PATH without R's additions.
cli_env <- function(ld = Sys.getenv("LD_LIBRARY_PATH")) {
  if (!nzchar(ld)) return(character())
  parts <- strsplit(ld, ":", fixed = TRUE)[[1]]
  r_added <- parts == file.path(R.home(), "lib") | startsWith(parts, "/usr/lib/jvm/") |
    parts %in% c("", "/usr/lib", "/usr/lib64", "/lib", "/lib64") |
    grepl("^/(usr/)?lib/[a-z0-9_]+-linux-gnu[a-z0-9_]*$", parts)
  paste0("LD_LIBRARY_PATH=", shQuote(paste(parts[!r_added], collapse = ":")))
}

read_text <- function(path) {
  if (!file.exists(path) || !file.size(path)) return("")
  txt <- rawToChar(readBin(path, "raw", file.size(path)))
  Encoding(txt) <- "UTF-8"
  txt
}

cli_signal_error <- function(stderr, status, cmd) {
  lines <- rev(strsplit(stderr, "\n", fixed = TRUE)[[1]])
  env <- NULL
  for (line in lines[nzchar(trimws(lines))]) {
    env <- tryCatch(jsonlite::fromJSON(line, simplifyVector = FALSE), error = function(e) NULL)
    if (is.list(env) && is.character(env$code)) break
    env <- NULL
  }
  if (is.null(env)) {
    env <- tryCatch(jsonlite::fromJSON(stderr, simplifyVector = FALSE), error = function(e) NULL)
    if (!is.list(env) || !is.character(env$code)) env <- NULL
  }
  if (is.null(env)) {
    code <- if (identical(as.integer(status), 127L)) "stage.runtime_missing" else "stage.crashed"
    amb_abort(code,
              paste0("`", paste(cmd, collapse = " "), "` exited with status ", status,
                     if (nzchar(stderr)) paste0(": ", trimws(utils::tail(strsplit(stderr, "\n")[[1]], 1L))) else "", "."),
              "Install the Python package (pip install -e .) or set options(ambidex.cli) / AMBIDEX_CLI to its path.",
              exit_code = as.integer(status))
  }
  amb_abort(env$code, env$message %||% "The ambidex command failed.", env$hint,
            exit_code = as.integer(env$exit_code %||% status), details = env$details)
}

#' Records (a list of JSON objects) as a data.frame
#'
#' Scalar fields become columns (missing -> NA); nested values become list
#' columns.
#' @noRd
records_to_df <- function(records) {
  if (is.list(records) && !is.null(names(records))) {
    inner <- Filter(function(v) is.list(v) && is.null(names(v)), records)
    records <- if (length(inner) == 1L) inner[[1]] else list(records)
  }
  if (!length(records)) return(data.frame())
  keys <- unique(unlist(lapply(records, names)))
  cols <- lapply(keys, function(k) {
    vals <- lapply(records, function(r) r[[k]])
    scalar <- vapply(vals, function(v) is.null(v) || (is.atomic(v) && length(v) == 1L), logical(1))
    if (all(scalar)) {
      vals[vapply(vals, is.null, logical(1))] <- NA
      unlist(vals)
    } else {
      I(vals)
    }
  })
  names(cols) <- keys
  structure(cols, class = "data.frame", row.names = .set_row_names(length(records)))
}

cli_kv <- function(values, what) {
  if (length(values) == 1L && is.list(values[[1]]) && is.null(names(values))) values <- values[[1]]
  if (!length(values) || is.null(names(values)) || any(!nzchar(names(values)))) {
    amb_abort("usage.invalid", paste0("Pass ", what, " as name = value pairs."),
              paste0("For example: amb_log_", what, "(run_id, alpha = 0.1)."))
  }
  vapply(names(values), function(k) {
    v <- values[[k]]
    if (length(v) != 1L) {
      amb_abort("usage.invalid", paste0("The value of '", k, "' must be a single value."),
                "Log one value per name.")
    }
    txt <- if (is.logical(v)) tolower(as.character(v)) else if (is.double(v)) fmt_double(v) else as.character(v)
    paste0(k, "=", txt)
  }, character(1), USE.NAMES = FALSE)
}
