#include "compressors/feedback.h"

#include "base/error.h"
#include "compressors/dgc_feedback.h"
#include "compressors/econtrol_feedback.h"
#include "compressors/ef21_feedback.h"
#include "compressors/error_feedback.h"
#include "compressors/no_feedback.h"

namespace thinwire::compressors {

std::unique_ptr<Feedback> makeFeedback(const FeedbackOptions& options) {
  switch (options.kind) {
    case FeedbackKind::kNone:
      return std::make_unique<NoFeedback>();
    case FeedbackKind::kEf:
      return std::make_unique<ErrorFeedback>(options);
    case FeedbackKind::kEf21:
      return std::make_unique<Ef21Feedback>();
    case FeedbackKind::kEControl:
      return std::make_unique<EControlFeedback>(options);
    case FeedbackKind::kDgc:
      return std::make_unique<DgcFeedback>(options);
  }
  TW_THROW(InvalidArgument, "unknown feedback kind ", static_cast<int>(options.kind));
}

FeedbackKind parseFeedbackKind(const std::string& name) {
  if (name == "none") return FeedbackKind::kNone;
  if (name == "ef") return FeedbackKind::kEf;
  if (name == "ef21") return FeedbackKind::kEf21;
  if (name == "econtrol") return FeedbackKind::kEControl;
  if (name == "dgc") return FeedbackKind::kDgc;
  TW_THROW(InvalidArgument, "unknown feedback '", name,
           "', expected one of none|ef|ef21|econtrol|dgc");
}

}  // namespace thinwire::compressors
