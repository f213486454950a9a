// Single-process wiring and the batch generation loop (see local_model.h).
#include "runtime/local_model.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/backend_registry.h"

namespace phimoe::runtime {
namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

absl::StatusOr<std::unique_ptr<LocalModel>> LocalModel::Open(const LocalModelOptions& options) {
  std::unique_ptr<LocalModel> m(new LocalModel());
  const bool synthetic = options.synthetic_config.has_value();
  if (synthetic && !options.synthetic_fill) {
    return absl::InvalidArgumentError("synthetic weights need a filler");
  }
  if (synthetic) {
    m->config_ = *options.synthetic_config;
  } else {
    ASSIGN_OR_RETURN(m->config_, ModelConfig::FromFile(options.model_dir + "/config.json"));
  }
  const ModelConfig full_config = m->config_;
  if (options.layers < 0 || options.layers > m->config_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("--layers ", options.layers, " outside 1-",
                                                   m->config_.n_layers));
  }
  if (options.layers > 0) m->config_.n_layers = options.layers;
  if (!synthetic) {
    ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::Open(options.model_dir));
  }
  ASSIGN_OR_RETURN(m->backend_, kernels::CreateBackend(options.device, options.threads, options.precision));
  SyntheticFill fill;
  if (synthetic) fill = options.synthetic_fill(m->backend_.get());
  if (options.remote_experts) {
    ASSIGN_OR_RETURN(m->dispatcher_, options.remote_experts(full_config));
    if (m->dispatcher_ == nullptr) return absl::InternalError("remote_experts returned no dispatcher");
  } else {
    expert::ExpertSet all(m->config_.n_layers, m->config_.n_experts, true);
    if (synthetic) {
      ASSIGN_OR_RETURN(m->experts_, expert::ExpertCompute::CreateSynthetic(m->config_, all,
                                                                   m->backend_.get(), fill));
    } else {
      ASSIGN_OR_RETURN(m->experts_,
                       expert::ExpertCompute::Create(m->config_, *m->checkpoint_, all, m->backend_.get()));
    }
    m->dispatcher_ = std::make_unique<LocalDispatcher>(m->experts_.get());
  }
  std::unique_ptr<attention::AttentionWeights> weights;
  if (synthetic) {
    ASSIGN_OR_RETURN(weights, attention::AttentionWeights::Synthetic(m->config_, m->backend_.get(), fill));
  } else {
    ASSIGN_OR_RETURN(weights, attention::AttentionWeights::Load(m->config_, *m->checkpoint_));
  }
  ASSIGN_OR_RETURN(m->engine_, attention::AttentionEngine::Create(m->config_, std::move(weights),
                                                       m->backend_.get(), m->dispatcher_.get(),
                                                       options.engine));
  return m;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> LocalModel::Generate(
    const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
    GenerateStats* stats, const std::function<void(size_t, int32_t)>& on_token) {
  GenerateStats local;
  GenerateStats& st = stats ? *stats : local;
  const size_t n = prompts.size();
  std::vector<attention::AttentionEngine::SequenceId> ids(n);
  std::vector<std::vector<int32_t>> out(n);
  std::vector<bool> done(n, false);
  auto release_all = [&] {
    for (size_t i = 0; i < n; ++i)
      if (engine_->HasSequence(ids[i])) (void)engine_->Release(ids[i]);
  };
  for (size_t i = 0; i < n; ++i) {
    ids[i] = next_id_++;
    SamplingParams sp = options.sampling;
    sp.seed = options.sampling.seed + i;
    if (absl::Status s = engine_->AddSequence(ids[i], prompts[i], sp); !s.ok()) {
      release_all();
      return Annotate(s, absl::StrCat("prompt ", i));
    }
  }
  const double t0 = Now();
  double t_first = -1;
  size_t n_done = 0, n_started = 0;
  std::vector<bool> started(n, false);
  while (n_done < n) {
    std::vector<attention::AttentionEngine::StepItem> items;
    for (size_t i = 0; i < n; ++i)
      if (!done[i]) items.push_back({ids[i], options.prefill_chunk, false});
    absl::StatusOr<std::vector<attention::AttentionEngine::StepOutput>> step = engine_->Step(items);
    if (!step.ok()) {
      release_all();
      return step.status();
    }
    for (const auto& o : *step) {
      const size_t i = static_cast<size_t>(std::find(ids.begin(), ids.end(), o.id) - ids.begin());
      st.recomputed_tokens += o.recomputed;
      if (!started[i]) st.prefill_tokens += o.processed - o.recomputed;
      if (!o.sampled) continue;
      if (!started[i]) {
        started[i] = true;
        ++n_started;
      } else {
        ++st.decode_tokens;
      }
      out[i].push_back(o.token);
      if (on_token) on_token(i, o.token);
      const bool stop = std::find(options.stop_ids.begin(), options.stop_ids.end(), o.token) !=
                        options.stop_ids.end();
      if (stop || static_cast<int64_t>(out[i].size()) >= options.max_new_tokens) {
        done[i] = true;
        ++n_done;
        (void)engine_->Release(ids[i]);
      }
    }
    if (t_first < 0 && n_started == n) t_first = Now();
  }
  const double t1 = Now();
  if (t_first < 0) t_first = t1;
  st.prefill_seconds = t_first - t0;
  st.decode_seconds = t1 - t_first;
  return out;
}

}  // namespace phimoe::runtime
