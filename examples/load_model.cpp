// A LibTorch program that loads a signed model with sentry::load_verified: every byte of the
// signed directory is checked on its way to the device (the CPU, or a GPU with a fourth
// argument), the tensors go into a small MLP's parameters, and a forward pass runs. Then a copy
// of the directory with one byte of its weights flipped is refused, naming the file.
//
//   load_model_example MODEL_DIR SIGNATURE PUBLIC_KEY [cuda|cuda:N]
#include <sentry/sentry.h>
#include <torch/torch.h>

#include "read_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

namespace {

// A copy of the model directory whose weights file has its last byte flipped.
std::string tampered_copy(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path copy = fs::temp_directory_path() / ("sentry_tampered_" + std::to_string(::getpid()));
  fs::remove_all(copy);
  fs::copy(model_dir, copy, fs::copy_options::recursive);
  std::fstream f(copy / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-1, std::ios::end);
  const char last = static_cast<char>(f.get());
  f.seekp(-1, std::ios::end);
  f.put(static_cast<char>(last ^ 1));
  return copy.string();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR SIGNATURE PUBLIC_KEY [cuda|cuda:N]\n";
    return 2;
  }
  const std::string model_dir = argv[1], signature = argv[2];
  const sentry::Trust trust =
      sentry::Trust::public_key(sentry::crypto::PublicKey::from_pem(example::read_file(argv[3])));
  sentry::LoadVerifiedOptions options;
  options.device = torch::Device(argc == 5 ? argv[4] : "cpu");

  torch::nn::Sequential model(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
  model->to(options.device);
  try {
    const sentry::NamedTensors state = sentry::load_verified(model_dir, signature, trust, options);
    auto params = model->named_parameters();
    if (state.size() != params.size()) throw std::runtime_error("not the model's tensors");
    torch::NoGradGuard no_grad;
    for (const auto& [name, tensor] : state) {
      std::cout << "loaded " << name << " " << tensor.sizes() << " on " << tensor.device() << "\n";
      params[name].copy_(tensor);  // throws for a name the model does not have
    }
  } catch (const std::exception& e) {
    std::cerr << "refused: " << e.what() << "\n";
    return 1;
  }
  const torch::Tensor out = model->forward(torch::ones({1, 4}, options.device));
  std::cout << "forward: " << out.cpu() << "\n";

  // One flipped byte in a copy of the directory: refused, the file named, nothing returned.
  const std::string copy = tampered_copy(model_dir);
  int status = 0;
  try {
    sentry::load_verified(copy, signature, trust, options);
    std::cerr << "a tampered copy loaded\n";
    status = 1;
  } catch (const sentry::VerificationError& e) {
    std::cout << "tampered copy refused: " << e.what() << "\n";
    if (std::string(e.what()).find("model.safetensors") == std::string::npos) status = 1;
  }
  std::filesystem::remove_all(copy);
  return status;
}
