"""Understanding free text: normalisation, keyword rules, classifiers behind one interface."""
