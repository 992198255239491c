// A LibTorch program that checks a model against its signature before using it: it builds a
// small MLP, gives it the weights the signed directory holds (examples/make_signed_model.py
// writes them from the same formula), verifies every tensor with sentry::verify_model, runs a
// forward pass, and shows that a changed weight is caught and named.
//
//   verify_model_example MODEL_DIR SIGNATURE PUBLIC_KEY
#include <sentry/sentry.h>
#include <torch/torch.h>

#include "read_file.h"

#include <iostream>

namespace {

// ((i % 7) - 3) / 4 for element i in row-major order, as make_signed_model.py writes them.
torch::Tensor formula_weights(at::IntArrayRef shape) {
  const int64_t n = c10::multiply_integers(shape);
  return ((torch::arange(n) % 7 - 3).to(torch::kFloat32) / 4).reshape(shape);
}

sentry::NamedTensors state_of(const torch::nn::Module& model) {
  sentry::NamedTensors state;
  for (const auto& p : model.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) state.emplace_back(b.key(), b.value());
  return state;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR SIGNATURE PUBLIC_KEY\n";
    return 2;
  }
  const std::string signature = argv[2];
  const sentry::Trust trust =
      sentry::Trust::public_key(sentry::crypto::PublicKey::from_pem(example::read_file(argv[3])));

  torch::nn::Sequential model(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) p.value().copy_(formula_weights(p.value().sizes()));
  }
  try {
    const sentry::VerifiedModel verified = sentry::verify_model(state_of(*model), signature, trust);
    std::cout << "verified " << verified.names.size() << " tensors of " << argv[1] << " ("
              << verified.hash_type << ", key " << verified.key_hint.substr(0, 16) << "...)\n";
    for (const auto& [step, ms] : verified.timings_ms) std::cout << "  " << step << ": " << ms << " ms\n";
  } catch (const std::exception& e) {
    std::cerr << "refused: " << e.what() << "\n";
    return 1;
  }
  const torch::Tensor out = model->forward(torch::ones({1, 4}));
  std::cout << "forward: " << out << "\n";

  // A weight changed after signing is named, and nothing passes.
  {
    torch::NoGradGuard no_grad;
    model->named_parameters()["0.weight"][0][0].add_(1);
  }
  try {
    sentry::verify_model(state_of(*model), signature, trust);
    std::cerr << "a changed weight verified\n";
    return 1;
  } catch (const sentry::VerificationError& e) {
    std::cout << "changed weight caught: " << e.what() << "\n";
    if (e.changed != std::vector<std::string>{"0.weight"}) return 1;
  }
  return 0;
}
