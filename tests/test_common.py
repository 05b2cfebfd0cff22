"""scikit-learn's common estimator checks over every public estimator of tumorchar.

Each expected failure names the check and why the estimator cannot pass it by design.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from tumorchar.models import (
    GraphSparseMTL,
    GraphSparseMTLCV,
    NearConstantFilter,
    ProportionSVM,
    TraceNormMTL,
    UnsupervisedClassifier,
)

ESTIMATORS = [
    GraphSparseMTL(),
    GraphSparseMTLCV(n_rho2=3, rho1_grid=(0.0, 0.1)),
    TraceNormMTL(),
    ProportionSVM(n_restarts=2),
    UnsupervisedClassifier(naming="labels", n_restarts=2, n_init=2),
    NearConstantFilter(),
]


# check name -> reason, per estimator class. Empty: every estimator passes every check
# (UnsupervisedClassifier is checked with naming="labels", the only mode that learns from
# y; label-free naming needs a naming score that the checks cannot pass).
EXPECTED_FAILURES: dict[str, dict[str, str]] = {}


def expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_common_checks(estimator, check):
    check(estimator)
