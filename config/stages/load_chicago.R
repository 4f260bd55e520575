# load_chicago: export the real `Chicago` ridership data from Debian's r-cran-modeldata as a typed table.
# Daily L-train ridership at Clark/Lake (thousands) with weather, sports schedules and the 14-day-lagged
# ridership of other stations. A day id (the key), a UTC timestamp (the feature-store time column) and
# the day of the week are added. The data is read at run time, never copied into the repository.
main <- function(ctx) {
  # system.file, not requireNamespace: loading modeldata's namespace costs ~0.6 s a run; utils::data needs none
  if (!nzchar(system.file(package = "modeldata"))) {
    stop("The demand example needs the R package 'modeldata' (Debian: apt-get install r-cran-modeldata).")
  }
  env <- new.env()
  utils::data("Chicago", package = "modeldata", envir = env)
  d <- as.data.frame(env$Chicago)
  keep <- c("ridership", "Austin", "Quincy_Wells", "Belmont", "Archer_35th", "Oak_Park", "Western",
            "Clark_Lake", "Clinton", "temp_min", "temp", "temp_max", "humidity", "wind", "percip",
            "weather_rain", "weather_snow", "Bulls_Home", "Bears_Home", "Cubs_Home", "WhiteSox_Home")
  dow <- factor(weekdays(d$date), levels = c("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                              "Saturday", "Sunday"))
  out <- cbind(
    data.frame(day_id = as.integer(d$date), day = as.POSIXct(format(d$date), tz = "UTC"), dow = dow),
    d[keep]
  )
  ambidex::ctx_write_table(ctx, "chicago", out)
  ambidex::ctx_log_metric(ctx, "n_rows", nrow(out))
}
