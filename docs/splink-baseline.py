# Plaintext baseline with Splink (PyPI), for comparison with bloomlink's matcher.
# Not part of bloomlink and not run by CI. Reproduce (outside the project):
#   python3 -m venv /tmp/splenv && /tmp/splenv/bin/pip install splink pandas   # Splink 5.0.0 used
#   bloomlink synth --children 100000 --seed 3 -o pop
#   cd pop && /tmp/splenv/bin/python ../docs/splink-baseline.py . splink-links.csv [tuned]
#   bloomlink evaluate --truth truth.csv --twins twins.csv splink-links.csv
# Two configurations:
# - default ("untuned"): Jaro-Winkler names, Splink's date-of-birth comparison, exact sex and NHS
#   number, Levenshtein postcode; u by random sampling, m by EM on two blocking rules;
#   connected-components clustering at probability 0.5 (no one-record-per-agency constraint).
# - "tuned" (third argument `tuned`): Splink's NameComparison (exact / Jaro-Winkler 0.92, 0.88,
#   0.7) with term-frequency adjustments on first name and surname, PostcodeComparison (full,
#   sector, district, area), the date-of-birth comparison, exact sex and NHS number; u from 10 M
#   random pairs; m by EM on four blocking rules; clustering at the threshold that maximises F1
#   *chosen with the truth* (an upper bound for Splink: bloomlink chooses its own without it).
import csv, sys, unicodedata, re, time, datetime
import pandas as pd
d = sys.argv[1]; out = sys.argv[2]; tuned = len(sys.argv) > 3 and sys.argv[3] == 'tuned'
def fold(s):
    s = unicodedata.normalize('NFKD', s or '')
    s = ''.join(c for c in s if not unicodedata.combining(c)).upper().replace('Ł','L')
    s = re.sub(r"['’`]", '', s); s = re.sub(r'[^A-Z ]+', ' ', s)
    s = ' '.join(s.split())
    return s or None
def date(s, fmts):
    for f in fmts:
        try: return datetime.datetime.strptime((s or '').strip(), f).date().isoformat()
        except ValueError: pass
    return None
def pc(s):
    s = re.sub(r'\s', '', (s or '').upper()); return s or None
def digits(s):
    s = re.sub(r'[\s-]', '', s or ''); return s or None
specs = {
 'health': ('utf-8-sig', 'Patient ID', 'Forename', 'Middle Names', 'Surname', 'Date of Birth', ['%d/%m/%Y'], 'Gender', {'M':'M','F':'F'}, 'Postcode', 'NHS Number', None),
 'police': ('cp1252', 'PERSON_REF', 'FIRST_NAME', 'MIDDLE_NAME', 'SURNAME', 'DOB', ['%d-%b-%Y'], 'SEX', {'1':'M','2':'F'}, 'POSTCODE', 'NHS_NO', None),
 'education': ('utf-8-sig', 'Pupil ID', 'Legal Forename', 'Middle Name(s)', 'Legal Surname', 'DOB', ['%Y-%m-%d'], 'Sex', {'Male':'M','Female':'F'}, 'Postcode', None, 'UPN'),
}
frames = []
for ag, (enc, rid, fn, mn, sn, db, fmts, sx, sxmap, pcc, nhs, upn) in specs.items():
    rows = []
    for r in csv.DictReader(open(f'{d}/{ag}.csv', encoding=enc)):
        rows.append(dict(unique_id=r[rid], first_name=fold(r[fn]), middle=fold(r[mn]), surname=fold(r[sn]),
                         dob=date(r[db], fmts), sex=sxmap.get((r[sx] or '').strip()), postcode=pc(r[pcc]),
                         nhs=digits(r[nhs]) if nhs else None, upn=(r[upn] or None) if upn else None))
    df = pd.DataFrame(rows); df['source_dataset'] = ag; frames.append(df)
from splink import Linker, SettingsCreator, block_on
from splink.internals.duckdb.database_api import DuckDBAPI
import splink.comparison_library as cl
if not tuned:
    comparisons = [
        cl.JaroWinklerAtThresholds('first_name', [0.9, 0.8]),
        cl.JaroWinklerAtThresholds('surname', [0.9, 0.8]),
        cl.DateOfBirthComparison('dob', input_is_string=True),
        cl.ExactMatch('sex'),
        cl.LevenshteinAtThresholds('postcode', [1, 2]),
        cl.ExactMatch('nhs'),
    ]
else:
    comparisons = [
        cl.NameComparison('first_name').configure(term_frequency_adjustments=True),
        cl.NameComparison('surname').configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison('dob', input_is_string=True),
        cl.ExactMatch('sex'),
        cl.PostcodeComparison('postcode'),
        cl.ExactMatch('nhs'),
    ]
settings = SettingsCreator(
    link_type='link_only', unique_id_column_name='unique_id',
    comparisons=comparisons,
    blocking_rules_to_generate_predictions=[
        block_on('dob'), block_on('first_name', 'surname'), block_on('surname', 'substr(dob,1,4)'),
        block_on('first_name', 'substr(dob,1,4)'), block_on('postcode'), block_on('nhs'),
    ],
    retain_intermediate_calculation_columns=False)
t0 = time.time()
db = DuckDBAPI()
linker = Linker([db.register(f) for f in frames], settings)
linker.training.estimate_u_using_random_sampling(max_pairs=1e7 if tuned else 2e6)
linker.training.estimate_parameters_using_expectation_maximisation(block_on('dob'))
linker.training.estimate_parameters_using_expectation_maximisation(block_on('first_name', 'surname'))
if tuned:
    linker.training.estimate_parameters_using_expectation_maximisation(block_on('postcode'))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on('surname', 'substr(dob,1,4)'))
threshold = 0.5
if tuned:
    # Threshold chosen with the truth: best pairwise F1 over a grid (Splink's upper bound).
    truth = {}
    for r in csv.DictReader(open(f'{d}/truth.csv')):
        truth[(r['agency'], r['record_id'])] = r['entity_id']
    from collections import Counter
    ent = Counter()
    for (ag, _), e in truth.items():
        ent[(e, ag)] += 1
    per_e = {}
    for (e, ag), n in ent.items():
        per_e.setdefault(e, []).append(n)
    n_true = sum(sum(a * b for i, a in enumerate(v) for b in v[i + 1:]) for v in per_e.values())
    best = (0.0, 0.5)
    for t in [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]:
        c = linker.clustering.cluster_pairwise_predictions_at_threshold(
            linker.inference.predict(threshold_match_probability=t), t).as_pandas_dataframe()
        groups = c.groupby('cluster_id')
        tp = pp = 0
        for _, g in groups:
            m = list(zip(g['source_dataset'], g['unique_id']))
            for i in range(len(m)):
                for j in range(i + 1, len(m)):
                    if m[i][0] != m[j][0]:
                        pp += 1
                        tp += truth.get(m[i]) == truth.get(m[j])
        p = tp / pp if pp else 0; rcl = tp / n_true; f1 = 2 * p * rcl / (p + rcl) if p + rcl else 0
        print(f'threshold {t}: precision {p:.4f} recall {rcl:.4f} F1 {f1:.4f}', file=sys.stderr)
        if f1 > best[0]:
            best = (f1, t)
    threshold = best[1]
pred = linker.inference.predict(threshold_match_probability=threshold)
cl_ = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, threshold).as_pandas_dataframe()
print(f'splink seconds {time.time()-t0:.1f}', file=sys.stderr)
with open(out, 'w') as f:
    f.write('link_id,agency,record_id,score,status\n')
    sizes = cl_.groupby('cluster_id').size()
    for _, r in cl_.iterrows():
        if sizes[r['cluster_id']] > 1:
            f.write(f"C{r['cluster_id']},{r['source_dataset']},{r['unique_id']},1,match\n")
