"""What the Streamlit pages call: the models list, uploads, tables and background training jobs
(no Streamlit, no TensorFlow)."""
