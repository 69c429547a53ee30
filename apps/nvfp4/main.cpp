// nvfp4: one command-line tool over the library. Each subcommand lives in its own file and
// is a thin layer over library calls; this file only wires them up and reports errors.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common.hpp"
#include "nvfp4/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"nvfp4 — NVIDIA's 4-bit NVFP4 format (and MXFP4, FP8 baselines): quantize, inspect, compare"};
  app.set_version_flag("--version", std::string("nvfp4 ") + NVFP4_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  nvfp4::cli::register_qtensor(app);
  nvfp4::cli::register_dequant(app);
  nvfp4::cli::register_inspect(app);
  nvfp4::cli::register_formats(app);
  nvfp4::cli::register_data(app);
  nvfp4::cli::register_train(app);
  nvfp4::cli::register_sample(app);
  nvfp4::cli::register_export_hf(app);
  nvfp4::cli::register_compare(app);
  nvfp4::cli::register_report(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const nvfp4::Error& e) {
    std::cerr << "nvfp4: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "nvfp4: internal error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
