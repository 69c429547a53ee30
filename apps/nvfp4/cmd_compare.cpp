// nvfp4 compare --recipes bf16,nvfp4,mxfp4 --data DIR --out DIR: train the same model on the
// same data in the same order under each recipe (and each seed), then write one self-contained
// HTML report (DIR/report.html), a JSON summary (DIR/summary.json) and print the summary table.
//
// A recipe item is a recipe spec (include/nvfp4/recipe.hpp, recipe::parse): a preset name
// optionally followed by colon-separated switches — no-2d, no-rht, no-sr, bf16=F-L,
// bf16-layer=NAME, switch=F, switch-fwd=F; e.g. "bf16,nvfp4,nvfp4:no-rht,mxfp4". Each run trains
// into DIR/<recipe>-seed<k>/.
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"
#include "train/report.hpp"
#include "train_options.hpp"

namespace nvfp4::cli {

namespace {

namespace fs = std::filesystem;

struct CompareCommand {
  TrainArgs t;
  std::string recipes = "bf16,nvfp4";
  int seeds = 1;
  bool json = false;
};

// "nvfp4:no-rht:switch=0.8" -> the recipe (recipe::parse); its name is the item, normalized.
recipe::Recipe parse_item(const std::string& item, int n_layer) {
  try {
    return recipe::parse(item, n_layer);
  } catch (const Error& e) {
    throw Error(std::string("--recipes: ") + e.what());
  }
}

std::string slug(std::string name) {
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  }
  return name;
}

void run(CompareCommand& a) {
  resolve_train_options(a.t);
  const train::TrainOptions base = a.t.o;
  std::vector<recipe::Recipe> recipes;
  std::stringstream ss(a.recipes);
  for (std::string item; std::getline(ss, item, ',');) recipes.push_back(parse_item(item, base.model.n_layer));
  if (recipes.empty()) throw Error("--recipes lists no recipe");
  // Refused before any training: two items training into one folder would fail after the first.
  std::map<std::string, std::string> recipe_of_folder;
  for (const auto& r : recipes) {
    const auto [it, fresh] = recipe_of_folder.emplace(slug(r.name), r.name);
    if (fresh) continue;
    if (it->second == r.name) {
      throw Error("--recipes lists \"" + r.name + "\" twice; list each recipe once (--seeds N repeats every recipe)");
    }
    throw Error("--recipes: \"" + it->second + "\" and \"" + r.name + "\" would train into the same folders (" +
                it->first + "-seedN); list only one of them");
  }
  fs::create_directories(base.out_dir);

  train::CompareReport rep;
  rep.title = "nvfp4 compare: " + a.recipes;
  rep.model_description = base.model.to_json() + ", " + std::to_string(base.model.num_params()) + " parameters";
  rep.data_description = base.data_dir;
  rep.baseline = "bf16";
  std::vector<std::string> diverged;
  std::cerr << "nvfp4 compare: " << recipes.size() << " recipe(s) x " << a.seeds << " seed(s)\n"
            << "  " << describe_train_options(base);
  for (const auto& r : recipes) {
    for (int k = 0; k < a.seeds; ++k) {
      train::TrainOptions o = base;
      o.seed = base.seed + static_cast<uint64_t>(k);
      o.recipe = r;
      o.out_dir = (fs::path(base.out_dir) / (slug(r.name) + "-seed" + std::to_string(o.seed))).string();
      std::cerr << "== " << r.name << ", seed " << o.seed << " -> " << o.out_dir << "\n";
      const train::TrainResult res = train::train(o);
      if (rep.unigram_val_loss <= 0) rep.unigram_val_loss = res.unigram_val_loss;
      // The whole run as its folder holds it: with --resume, res.history has only this
      // invocation's steps (none for a run that had finished).
      train::RecipeRun run = train::read_run_folder(o.out_dir).run;
      if (run.diverged) diverged.push_back(r.name + " (seed " + std::to_string(o.seed) + "): " + run.divergence);
      rep.runs.push_back(std::move(run));
    }
  }
  std::ostringstream cmd;
  cmd << "nvfp4 compare --recipes " << a.recipes << " --seeds " << a.seeds << " --data " << base.data_dir << " --out "
      << base.out_dir;
  rep.command = cmd.str();
  write_comparison(rep, base.out_dir, a.json);
  if (!diverged.empty()) {
    std::string what = std::to_string(diverged.size()) + " of " + std::to_string(rep.runs.size()) +
                       " runs diverged (the report shows them):";
    for (const auto& d : diverged) what += "\n  " + d;
    throw Error(what);
  }
}

}  // namespace

void register_compare(CLI::App& app) {
  const auto [c, a] = add_command<CompareCommand>(app,
      "compare", "Train the same model under several precision recipes and write an HTML report comparing them");
  add_train_options(c, a->t, "Folder for report.html, summary.json and one training folder per run");
  c->add_option("--recipes", a->recipes,
                "Comma-separated recipes: " + recipe::preset_names() +
                    ", each optionally with :no-2d :no-rht :no-sr :bf16=FIRST-LAST :bf16-layer=NAME :switch=F :switch-fwd=F")
      ->capture_default_str();
  c->add_option("--seeds", a->seeds, "Seeds per recipe (mean and spread in the summary)")
      ->capture_default_str()
      ->transform(integer_in(1, 1000));
  c->add_flag("--json", a->json, "Print the summary as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
