"""Guided tours: for each roster family, a few steps of idea → live figure → question.

Presenter view (large type, one step per screen) with ?present=1; the tour and step live in the URL.
"""
import streamlit as st

from explorer.catalog import load_catalog

from explorer.tours import load_tours
from explorer.text import escape_markdown
from ui.common import QUOTED_LINK_TEXT, drop_unused_link_params, guard, int_from_link, page_setup
from ui.tour_figures import render_figure

page_setup("Tours", ":material/school:")

tours = load_tours()
families = load_catalog().families_by_id
tour_ids = [t["family"] for t in tours]
by_id = {t["family"]: t for t in tours}

params = st.query_params
drop_unused_link_params(("tour", "step", "present"))
if "tour_id" not in st.session_state:  # first visit: the tour, step and view the link names, each checked
    wanted = params.get("tour")
    st.session_state.tour_id = wanted if wanted in by_id else tour_ids[0]
    if wanted and wanted not in by_id:
        named = escape_markdown(wanted, limit=QUOTED_LINK_TEXT)
        examples = escape_markdown(", ".join(tour_ids[:4]))
        st.warning(f"The link asks for a tour named '{named}', which does not exist (tours are named by family id, "
                   f"e.g. {examples}; all are in the menu below): showing {by_id[tour_ids[0]]['title']}.")
    steps_in_tour = len(by_id[st.session_state.tour_id]["steps"])
    st.session_state.tour_step = int_from_link("step", 1, 1, steps_in_tour, "step (of this tour)") - 1
    present_text = params.get("present", "0")
    st.session_state.tour_present = present_text == "1"
    if present_text not in ("0", "1"):
        named = escape_markdown(present_text, limit=QUOTED_LINK_TEXT)
        st.warning(f"The link's present='{named}' is neither 1 (presenter view) nor 0: showing the normal view.")


def on_tour_change():
    st.session_state.tour_step = 0


present = st.session_state.tour_present
if present:
    st.markdown("<style>.stMainBlockContainer p, .stMainBlockContainer li {font-size: 1.45rem; line-height: 1.6}"
                " .stMainBlockContainer h1 {font-size: 3rem} .stMainBlockContainer h2 {font-size: 2.3rem}</style>",
                unsafe_allow_html=True)
else:
    st.title("Tours")

c1, c2 = st.columns([3, 1])
c1.selectbox("Tour", tour_ids, key="tour_id", on_change=on_tour_change,
             format_func=lambda i: by_id[i]["title"], label_visibility="collapsed" if present else "visible")
c2.toggle("Presenter view", key="tour_present")

tour = by_id[st.session_state.tour_id]
steps = tour["steps"]
st.session_state.tour_step = min(max(st.session_state.tour_step, 0), len(steps) - 1)
index = st.session_state.tour_step
step = steps[index]
st.query_params.from_dict({"tour": tour["family"], "step": str(index + 1), **({"present": "1"} if present else {})})

family = families.get(tour["family"])
st.header(f"{tour['title']}" if present else tour["title"])
st.caption(f"Step {index + 1} of {len(steps)}" + (f" · {family.name}, {family.year} · [paper]({family.paper['url']})" if family else ""))
st.subheader(step["title"])
st.markdown(step["text"])

with guard("This step's figure"):
    render_figure(step["figure"])

st.info(f"**Think about it:** {step['question']}", icon=":material/lightbulb:")

b1, b2, _ = st.columns([1, 1, 4])
if b1.button("← Previous", disabled=index == 0, key="tour_prev"):
    st.session_state.tour_step = index - 1
    st.rerun()
if b2.button("Next →", disabled=index == len(steps) - 1, key="tour_next"):
    st.session_state.tour_step = index + 1
    st.rerun()
