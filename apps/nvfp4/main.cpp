// nvfp4: one command-line tool over the library. Each subcommand lives in its own file and
// is a thin layer over library calls; this file only wires them up and reports errors.
//
// Exit status: 0 success; 1 a usage error or bad input (a one-line message "nvfp4: ..." that
// names the option, file or tensor); 2 an internal error (a bug: please report it).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <new>
#include <string>
#include <string_view>

#include "common.hpp"
#include "nvfp4/error.hpp"

namespace {

// One error line. Library messages never start with the program name (error.hpp); one that
// still does (the CUDA backend's, until it follows the rule) is not prefixed twice.
void print_error(const std::string& what) {
  constexpr std::string_view kPrefix = "nvfp4: ";
  std::cerr << kPrefix << (what.rfind(kPrefix, 0) == 0 ? what.substr(kPrefix.size()) : what) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nvfp4 — NVIDIA's 4-bit NVFP4 format (and MXFP4, FP8 baselines): quantize, inspect, compare"};
  app.set_version_flag("--version", std::string("nvfp4 ") + NVFP4_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
  // Usage errors read like every other error (set before the subcommands, which copy it).
  app.failure_message([](const CLI::App* a, const CLI::Error& e) {
    std::string help = "nvfp4";
    // The chain of subcommands given ("nvfp4 tokenizer train"), one selected per level.
    for (const CLI::App* at = a; at && !at->get_subcommands().empty();) {
      at = at->get_subcommands().front();
      help += " " + at->get_name();
    }
    return "nvfp4: " + std::string(e.what()) + " (`" + help + " --help` lists the options)\n";
  });
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
  nvfp4::cli::register_tokenize(app);
  nvfp4::cli::register_tokenizer(app);
  nvfp4::cli::register_generate(app);
  nvfp4::cli::register_eval(app);
  nvfp4::cli::register_quantize(app);
  nvfp4::cli::register_bench_serve(app);
  nvfp4::cli::register_serve(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;  // --help and --version are "errors" with status 0
  } catch (const nvfp4::Error& e) {
    print_error(e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // A folder that cannot be created or read (permissions, a full disk): what() names the path.
    print_error(e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    print_error("out of memory; make the model, batch or tensors smaller");
    return 1;
  } catch (const std::exception& e) {
    print_error(std::string("internal error: ") + e.what());
    return 2;
  }
  return 0;
}
